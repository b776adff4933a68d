"""QAT: fake quantization reproduces the artifact's numbers; QAT beats PTQ; deterministic."""
from __future__ import annotations

import copy
import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from autocompress.backends import ort_runner
from autocompress.backends.onnx_export import export_onnx
from autocompress.compression.weights import fake_quant
from autocompress.compression.apply import apply_plan, compress_torch
from autocompress.compression.plan import Plan
from autocompress.compression.qat import QATConfig, apply_qat, finetune
from autocompress.compression.weights.onnx_graph import producing_nodes
from autocompress.compression.weights.storage import WeightPlan
from autocompress.compression.weights.quantize import to_opset
from autocompress.workloads import Quality, Workload
from tiny_workload import make_workload


def _rebuilt(proto: onnx.ModelProto, name: str) -> str:
    """The value a compute node reads as the weight ``name`` rebuilt from its stored codes."""
    stored = {i.name for i in proto.graph.initializer if i.name.startswith(name + "_")}
    reached = set(stored)
    for node in proto.graph.node:           # graph order: producers before readers
        if node.op_type in ("MatMul", "Conv", "Gemm") and node.input[1] in reached:
            return node.input[1]
        if any(i in reached for i in node.input):
            reached.update(node.output)
    return name


def _artifact_weight(proto: onnx.ModelProto, name: str) -> np.ndarray:
    """The float weight an artifact really computes for ``name``, read back through ONNX Runtime."""
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    if name + "_quantized" in inits:     # ORT dynamic int8: weight, scale, zero point
        q = inits[name + "_quantized"].astype(np.float32) - inits[name + "_zero_point"]
        return (q * inits[name + "_scale"]).astype(np.float32)
    if name + "_rows_per_scale" in inits:   # gathered int8 rows, one scale per block of rows
        q, rows = inits[name + "_q"], inits[name + "_rows_per_scale"]
        column = (-1, *[1] * (q.ndim - 1))
        scale = np.repeat(inits[name + "_scale"].reshape(-1), rows)[:len(q)].reshape(column)
        offset = np.repeat(inits[name + "_offset"].reshape(-1), rows)[:len(q)].reshape(column)
        return q.astype(np.float32) * scale + offset
    if not producing_nodes(proto.graph, name):   # compact_graph renamed the rebuilt weight:
        name = _rebuilt(proto, name)              # follow its codes
    needed = producing_nodes(proto.graph, name)
    assert needed, f"{name} is not rebuilt in the artifact (not quantized?)"
    graph = helper.make_graph(needed, "w", [],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)],
                              list(proto.graph.initializer))
    model = helper.make_model(graph, opset_imports=list(proto.opset_import))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {})[0]


def _fake_weights(model: nn.Module, workload, plan: Plan) -> dict[str, np.ndarray]:
    """Fake-quantized weights (ONNX layout) of a copy of ``model``, keyed by initializer."""
    from autocompress.compression.initializers import match_initializers

    model = copy.deepcopy(model)
    proto = to_opset(export_onnx(model, workload))
    weights, calibration = fake_quant.weight_plans(plan, match_initializers(proto, model))
    fake = fake_quant.FakeQuant(model, fake_quant.find_targets(model, proto, weights, calibration))
    out = {}
    for t in fake.targets:
        w = model.get_submodule(t.module).weight.detach()
        out[t.init] = (w.t() if t.transposed else w).contiguous().numpy()
    assert not fake.via_oracle, "the fast mirror should cover every scheme these plans use"
    return out


def _check_same_numbers(model, workload, plan, tmp_path, n_expected):
    artifact = apply_plan(plan, workload, tmp_path / "a.onnx", model=copy.deepcopy(model))
    proto = onnx.load(str(artifact.path))
    fake = _fake_weights(model, workload, plan)
    assert len(fake) == n_expected
    for init, weight in fake.items():
        np.testing.assert_array_equal(weight, _artifact_weight(proto, init), err_msg=init)


MLP_PLAN = Plan({"fc1": {"quant": "w4"}, "fc2": {"quant": "w8"}, "head": {"quant": "w8a8"}})


def test_fake_quant_equals_artifact_after_qat(tmp_path):
    workload = make_workload()
    trained = finetune(MLP_PLAN, workload, QATConfig(steps=5, lr=1e-3))
    _check_same_numbers(trained, workload, MLP_PLAN, tmp_path, 3)


def test_palette_weights_equal_the_artifact_after_qat(tmp_path):
    """Palette weights are clustered together once per step (one k-means call for every
    weight); after training they still hold exactly the artifact's numbers."""
    plan = Plan({"fc1": {"clusters": 16, "sparsity": 0.5}, "fc2": {"clusters": 4},
                 "head": {"clusters": 16}})
    workload = make_workload()
    trained = finetune(plan, workload, QATConfig(steps=5, lr=1e-2))
    assert not np.allclose(trained.fc2.weight.detach().numpy(),
                           workload.model.fc2.weight.detach().numpy())   # training moved them
    _check_same_numbers(trained, workload, plan, tmp_path, 3)


def test_fake_quant_equals_artifact_on_cnn_and_embedding(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(40, 16)
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.fc = nn.Linear(8 * 16 + 16, 5)

        def forward(self, image, ids):
            x = self.dw(torch.relu(self.conv(image))).flatten(1)
            return self.fc(torch.cat([x[:, :128], self.embed(ids).mean(1)], 1))

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    example = {"image": rng.standard_normal((1, 1, 4, 4)).astype(np.float32),
               "ids": rng.integers(0, 40, (1, 6)).astype(np.int64)}
    workload = Workload("net", ("image", "ids"), ("out",), example, [example], [example],
                        lambda o: Quality(0.0, "none"), model=Net().eval())
    for quant in ("w4", "w8", "w8a8", "w3", "w2", "w16"):
        plan = Plan({"conv": {"quant": quant}, "dw": {"quant": quant}, "fc": {"quant": quant},
                     "embed": {"quant": "w8"}})
        _check_same_numbers(compress_torch(plan, workload), workload, plan, tmp_path, 4)


@pytest.mark.parametrize("kind,shape", [("matmul", (40, 24)), ("matmul", (64, 8)),
                                        ("matmul", (16, 8)), ("conv", (6, 3, 3, 3)),
                                        ("gather", (30, 8))])
def test_fast_mirror_matches_the_storage_path(kind, shape):
    weight = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    weight[0] = 0.0                                      # an all-zero channel / row takes scale 1
    plans = [WeightPlan(q) for q in ("w16", "w8", "w4", "w3", "w2", "w8a8")]
    plans += [WeightPlan("w4", sparsity=0.5), WeightPlan("w8", sparsity=0.75),
              WeightPlan("float", sparsity=0.5), WeightPlan("w2", sparsity=0.5),
              WeightPlan("float", clusters=4), WeightPlan("float", sparsity=0.5, clusters=4)]
    for plan in plans:
        fast = fake_quant.mirror(torch.from_numpy(weight), kind, plan).numpy()
        truth = fake_quant.oracle(weight, kind, plan)
        np.testing.assert_array_equal(fast, truth, err_msg=str(plan))
        assert not np.array_equal(fast, weight), plan    # it really changed the weight


def test_clustered_weights_take_the_fast_mirror_and_keep_their_palette():
    weight = np.random.default_rng(2).standard_normal((32, 8)).astype(np.float32)
    for plan in (WeightPlan("float", clusters=4), WeightPlan("float", sparsity=0.5, clusters=4)):
        fast = fake_quant.mirror(torch.from_numpy(weight), "matmul", plan).numpy()
        np.testing.assert_array_equal(fast, fake_quant.oracle(weight, "matmul", plan))
        assert len(np.unique(fast[fast != 0])) == 4
        assert (plan.sparsity == 0) == bool(np.all(fast != 0))


def _fidelity_workload():
    """The tiny MLP scored by closeness of its logits to the float model's (higher is better)."""
    base = make_workload()
    with torch.no_grad():
        teacher = np.concatenate([base.model(torch.from_numpy(b["x"])).numpy()
                                  for b in base.evaluation])

    def score(outputs):
        student = np.concatenate([o[0] for o in outputs])
        return Quality(-float(np.mean((student - teacher) ** 2)), "neg_mse")

    return Workload("tiny-fidelity", base.input_names, base.output_names, base.example,
                    base.calibration, base.evaluation, score, model=base.model,
                    dynamic_axes=base.dynamic_axes)


@pytest.mark.parametrize("bits", ["w4", "w2"])
def test_qat_beats_ptq_and_is_byte_deterministic(tmp_path, bits):
    workload = _fidelity_workload()
    plan = Plan({u: {"quant": bits} for u in ("fc1", "fc2", "head")})

    def quality(path):
        session = ort_runner.make_session(path)
        return workload.score(ort_runner.run_batches(session, workload.evaluation)).value

    ptq = quality(apply_plan(plan, workload, tmp_path / "ptq.onnx").path)
    config = QATConfig(steps=40, lr=1e-3)
    report = {}
    first = apply_qat(plan, workload, tmp_path / "qat1.onnx", config, report=report)
    second = apply_qat(plan, workload, tmp_path / "qat2.onnx", config)
    qat = quality(first.path)
    assert report["quantized_weights"] == 3 and len(report["losses"]) == 40
    assert report["via_oracle"] == []
    assert qat > 0.6 * ptq        # negative MSE to the float model: QAT cuts PTQ's error by > 40 %
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()
    # same format as PTQ: identical graph structure and initializer names/types/shapes
    ptq_proto, qat_proto = onnx.load(str(tmp_path / "ptq.onnx")), onnx.load(str(first.path))
    assert [n.op_type for n in ptq_proto.graph.node] == [n.op_type for n in qat_proto.graph.node]
    assert sorted((i.name, i.data_type, tuple(i.dims)) for i in ptq_proto.graph.initializer) == \
        sorted((i.name, i.data_type, tuple(i.dims)) for i in qat_proto.graph.initializer)
    assert first.size_bytes == (tmp_path / "ptq.onnx").stat().st_size
    assert hashlib.sha256((tmp_path / "ptq.onnx").read_bytes()).hexdigest() != first.sha256


def test_search_qat_finalist_pass_records_ptq_and_qat(tmp_path):
    import json

    from autocompress import api

    config = api.SearchConfig(model="tiny_workload:make_workload", target="host", trials=3,
                              qat_steps=5, out=str(tmp_path / "run"))
    api.search(config)
    document = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert document["config"]["qat_steps"] == 5
    assert document["front"]
    for p in document["front"]:
        qat = p["qat"]
        assert qat["config"]["steps"] == 5
        assert (tmp_path / "run" / qat["artifact"]).is_file()
        assert qat["size_bytes"] == p["size_bytes"]          # same format, same size
        assert isinstance(qat["quality"], float) and isinstance(p["quality"], float)
        if qat["quantized_weights"]:                          # trained: new weights, new bytes
            assert qat["artifact_sha256"] != p["artifact_sha256"]
        else:             # nothing quantized: plain distillation on the same loop (recovery)
            assert qat["recovery"]["steps"] == 5 and qat["recovery"]["optimizer"] == "adamw"
