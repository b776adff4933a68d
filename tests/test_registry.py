"""The technique registry's contract, over every registered technique and three fixture models
(an MLP, a CNN, a tiny MiniLM), and the "add a technique" recipe tried with a new one."""
import json
import random

import numpy as np
import onnx
import pytest

from autocompress.api import discover_knobs, discover_skips
from autocompress.cli import main
from autocompress.compression import registry
from autocompress.compression.structural import precedence
from autocompress.compression.apply import apply_plan, compress_torch
from autocompress.compression.plan import Plan
from autocompress.compression.registry import TORCH, KnobSpec, Technique
from tests import conv_workload, tiny_workload
from tests.tiny_transformer import make_tiny_transformer

FIXTURES = {"mlp": tiny_workload.make_workload, "cnn": conv_workload.make_workload,
            "transformer": make_tiny_transformer}


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def model(request):
    workload = FIXTURES[request.param]()
    return workload, discover_knobs(workload)


def _outputs(path, workload) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, batch)[0] for batch in workload.evaluation[:2]])


def _one_unit_per_knob(knobs):
    """The first unit that offers each knob name (its every choice is tried there)."""
    seen = {}
    for knob in knobs:
        seen.setdefault(knob.name, knob)
    return list(seen.values())


def test_every_offered_knob_is_registered_and_starts_with_its_identity(model):
    _, knobs = model
    specs = registry.knob_specs()
    for knob in knobs:
        assert knob.name in specs, f"{knob.key}: knob not in the registry"
        identity = specs[knob.name].identity
        assert identity is None or knob.choices[0] == identity, knob
        assert len(set(map(json.dumps, knob.choices))) == len(knob.choices) > 1, knob
        assert registry.technique_of(knob.technique) in {t.name for t in registry.TECHNIQUES}


def test_the_identity_choices_give_the_bytes_of_the_empty_plan(model, tmp_path):
    workload, knobs = model
    identity = {}
    for knob in knobs:
        identity.setdefault(knob.unit, {})[knob.name] = knob.choices[0]
    empty = apply_plan(Plan(), workload, tmp_path / "empty.onnx")
    explicit = apply_plan(Plan(identity), workload, tmp_path / "identity.onnx")
    assert explicit.sha256 == empty.sha256


def test_each_choice_applies_alone_and_shrinking_choices_never_grow_the_file(model, tmp_path):
    workload, knobs = model
    base = apply_plan(Plan(), workload, tmp_path / "base.onnx")
    tried = 0
    for knob in _one_unit_per_knob(knobs):
        spec = registry.spec(knob.name)
        for choice in knob.choices[1:]:
            plan = Plan({knob.unit: {knob.name: choice}})
            artifact = apply_plan(plan, workload, tmp_path / f"{plan.digest()}.onnx")
            assert np.isfinite(_outputs(artifact.path, workload)).all(), (knob.key, choice)
            if spec.shrinks:
                assert artifact.size_bytes <= base.size_bytes, (knob.key, choice)
            tried += 1
    assert tried >= len({k.name for k in knobs})


def test_resolve_is_idempotent_and_coherent_plans_are_fixed_points(model):
    workload, knobs = model
    rng = random.Random(0)
    contained = precedence.contained_units(workload.model)
    for _ in range(200):
        units = {}
        for knob in knobs:
            if rng.random() < 0.5:
                units.setdefault(knob.unit, {})[knob.name] = rng.choice(knob.choices)
        once = precedence.resolve(Plan(units))
        assert precedence.resolve(once) == once
        coherent = precedence.coherent(Plan(units), contained)
        assert precedence.coherent(coherent, contained) == coherent


def test_every_skip_names_a_unit_of_the_model_and_a_technique(model):
    workload, _ = model
    units = {name for name, _ in workload.model.named_modules()}
    skips = discover_skips(workload)
    for skip in skips:
        assert skip.unit in units, skip      # "" is the whole model
        assert skip.reason and registry.technique_of(skip.technique) in \
            {t.name for t in registry.TECHNIQUES}, skip


def test_the_registry_derives_what_other_modules_listed_by_hand():
    assert registry.WEIGHT_KNOBS == ("quant", "sparsity", "clusters")
    assert set(registry.names(shrinks=False)) == {"distill_steps", "calibration", "exit_after",
                                                  "exit_threshold"}
    assert set(registry.names(trains=True)) == {"calibration", "replace", "distill_steps",
                                                "exit_after"}
    titles = registry.titles()
    assert set(titles) == set(registry.knob_specs()) and "exit_after" in titles
    assert [name for name, _ in registry.torch_steps()] == list(registry.TORCH_STAGE)
    assert registry.trains(Plan({"": {"distill_steps": 50}}))
    assert not registry.trains(Plan({"": {"distill_steps": 0}, "fc1": {"quant": "w4"}}))


# --------------------------------------------------------------------------- the recipe

EXAMPLE = Technique(
    "bias removal", "Linear layers with a bias",
    (KnobSpec("drop_bias", False, "bias removed", TORCH, probe=TORCH),),
    "drop_bias: false | true", "tests/example_technique.py", ("bias removal",),
    offer="tests.example_technique:offer", apply="tests.example_technique:apply")


@pytest.fixture
def example(monkeypatch):
    """The recipe's registry line (and its place in the torch stage: before distillation)."""
    monkeypatch.setattr(registry, "TECHNIQUES", registry.TECHNIQUES + (EXAMPLE,))
    stage = list(registry.TORCH_STAGE)
    stage.insert(stage.index("knowledge distillation"), EXAMPLE.name)
    monkeypatch.setattr(registry, "TORCH_STAGE", tuple(stage))


def test_a_new_technique_is_offered_applied_and_listed_from_its_registry_line(example, tmp_path,
                                                                              capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    workload = tiny_workload.make_workload()
    knobs = [k for k in discover_knobs(workload) if k.name == "drop_bias"]
    assert [k.unit for k in knobs] == ["fc1", "fc2", "head"]
    plan = Plan({"fc1": {"drop_bias": True}, "fc2": {"drop_bias": True}})
    model = compress_torch(plan, workload)
    assert model.fc1.bias is None and model.fc2.bias is None and model.head.bias is not None
    base = apply_plan(Plan(), workload, tmp_path / "base.onnx")
    artifact = apply_plan(plan, workload, tmp_path / "plan.onnx")
    base_inits = len(onnx.load(str(base.path)).graph.initializer)
    assert len(onnx.load(str(artifact.path)).graph.initializer) == base_inits - 2
    assert artifact.size_bytes < base.size_bytes
    assert np.isfinite(_outputs(artifact.path, workload)).all()
    assert main(["techniques", "--model", "tests.tiny_workload:make_workload"]) == 0
    out = capsys.readouterr().out
    assert "bias removal" in out and "tests/example_technique.py" in out


def test_a_search_explores_a_new_technique(example, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["search", "--model", "tests.tiny_workload:make_workload", "--target", "host",
                 "--trials", "8", "--seed", "1", "--finalize", "0", "--out", str(run)]) == 0
    import optuna

    study = optuna.load_study(study_name="autocompress", storage=f"sqlite:///{run}/study.db")
    params = [t.params for t in study.trials if t.state.name == "COMPLETE"]
    assert any(key.endswith(":drop_bias") for p in params for key in p)
    assert any(value is True for p in params for key, value in p.items()
               if key.endswith(":drop_bias"))
    drops = study.user_attrs["sensitivity"]["drops"]   # its probe (TORCH) measured it
    assert {key for key in drops if key.endswith(":drop_bias")} == {"fc1:drop_bias",
                                                                    "fc2:drop_bias",
                                                                    "head:drop_bias"}
    assert (run / "pareto.json").is_file()
