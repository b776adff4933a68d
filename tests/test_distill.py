"""Knowledge distillation recovers a compressed model's quality, deterministically."""
import dataclasses

import numpy as np
import pytest
import torch

from autocompress.backends.ort_runner import make_session, run_batches
from autocompress.compression.training import distill
from autocompress.compression.apply import apply_plan, compress_torch
from autocompress.compression.knobs import torch_knobs
from autocompress.compression.plan import DISTILL_STEPS, DROP, PRUNE_RATIO, WHOLE_MODEL, Plan
from autocompress.workloads import Quality, Workload
from tests.tiny_transformer import make_tiny_transformer

PRUNED = {"fc1": {PRUNE_RATIO: 0.75}, "fc2": {PRUNE_RATIO: 0.75}}


def random_mlp_workload() -> Workload:
    """A random-weight MLP classifier (no training: fidelity to it is what is measured)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential()
        model.fc1 = torch.nn.Linear(32, 128)
        model.act1 = torch.nn.ReLU()
        model.fc2 = torch.nn.Linear(128, 64)
        model.act2 = torch.nn.ReLU()
        model.head = torch.nn.Linear(64, 10)
    rng = np.random.default_rng(0)
    calibration = [{"x": rng.standard_normal((64, 32)).astype(np.float32)} for _ in range(4)]
    evaluation = [{"x": rng.standard_normal((256, 32)).astype(np.float32)}]
    return Workload("mlp", ("x",), ("logits",), {"x": evaluation[0]["x"][:1]}, calibration,
                    evaluation, lambda outs: Quality(0.0, "none"), model=model.eval(),
                    dynamic_axes={"x": {0: "b"}, "logits": {0: "b"}})


@pytest.fixture(scope="module")
def tiny():
    return random_mlp_workload()


def teacher_agreement(path, workload):
    student = np.concatenate([o[0] for o in run_batches(make_session(path), workload.evaluation)])
    with torch.no_grad():
        teacher = np.concatenate([workload.model(torch.from_numpy(b["x"])).numpy()
                                  for b in workload.evaluation])
    return float((student.argmax(1) == teacher.argmax(1)).mean())


def test_the_knob_is_model_wide(tiny):
    knobs = [k for k in torch_knobs(tiny.model, [torch.from_numpy(tiny.example["x"])], ("x",))
             if k.name == DISTILL_STEPS]
    assert [(k.unit, k.choices) for k in knobs] == [(WHOLE_MODEL, distill.STEP_CHOICES)]
    assert distill.STEP_CHOICES[0] == 0


def test_distillation_recovers_a_pruned_classifier(tmp_path, tiny):
    pruned = compress_torch(Plan(PRUNED), tiny)
    before = distill.calibration_loss(pruned, tiny)
    losses = distill.distill(pruned, tiny, 200)
    after = distill.calibration_loss(pruned, tiny)
    assert len(losses) == 200
    assert after < 0.6 * before
    plain = apply_plan(Plan(PRUNED), tiny, tmp_path / "p.onnx")
    recovered = apply_plan(Plan({**PRUNED, WHOLE_MODEL: {DISTILL_STEPS: 200}}), tiny, tmp_path / "d.onnx")
    assert recovered.n_params == plain.n_params and recovered.sha256 != plain.sha256
    assert teacher_agreement(recovered.path, tiny) > teacher_agreement(plain.path, tiny) + 0.1


def test_distillation_recovers_embeddings(tmp_path):
    workload = make_tiny_transformer()
    dropped = {"layers.1": {DROP: True}}
    plain = apply_plan(Plan(dropped), workload, tmp_path / "p.onnx")
    recovered = apply_plan(Plan({**dropped, WHOLE_MODEL: {DISTILL_STEPS: 200}}), workload,
                           tmp_path / "d.onnx")

    def quality(path):
        return workload.score(run_batches(make_session(path), workload.evaluation)).value

    assert quality(recovered.path) > quality(plain.path) + 0.03


def test_loss_kinds():
    s = torch.tensor([[2.0, 0.0, -1.0]])
    assert float(distill.loss("logits", s, s)) == pytest.approx(0.0, abs=1e-7)
    assert float(distill.loss("logits", s, -s)) > 1.0
    unit = torch.tensor([[1.0, 0.0]])
    assert float(distill.loss("embedding", unit, torch.tensor([[0.0, 1.0]]))) == pytest.approx(3.0)


def test_same_plan_same_bytes_and_only_calibration_data_is_used(tmp_path, tiny):
    plan = Plan({**PRUNED, WHOLE_MODEL: {DISTILL_STEPS: 50}})
    a = apply_plan(plan, tiny, tmp_path / "a.onnx")
    b = apply_plan(plan, tiny, tmp_path / "b.onnx")
    other_eval = dataclasses.replace(tiny, evaluation=[{"x": np.zeros((3, 64), np.float32)}])
    c = apply_plan(plan, other_eval, tmp_path / "c.onnx")
    assert a.sha256 == b.sha256 == c.sha256
    assert torch.get_num_threads() >= 1 and not torch.are_deterministic_algorithms_enabled()


def test_output_kind_is_validated(tiny):
    with pytest.raises(ValueError, match="output_kind"):
        dataclasses.replace(tiny, output_kind="boxes")
    assert Workload.__dataclass_fields__["output_kind"].default == "logits"


def test_a_student_that_already_matches_is_left_alone(tmp_path, tiny):
    base = apply_plan(Plan(), tiny, tmp_path / "a.onnx")
    distilled = apply_plan(Plan({WHOLE_MODEL: {DISTILL_STEPS: 50}}), tiny, tmp_path / "b.onnx")
    assert distilled.sha256 == base.sha256
