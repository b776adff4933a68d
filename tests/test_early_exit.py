"""Early exit: the ONNX artifact really branches, exit rate and expected latency add up."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from autocompress.backends import ort_runner
from autocompress.compression import early_exit
from autocompress.cost_models import exit_runtime
from autocompress.compression.apply import apply_plan, compress_torch
from autocompress.compression.plan import Plan
from autocompress.device_profiles import resolve_target
from autocompress.pipeline import Evaluator
from tests.fixture_models import exit_cnn_workload, exit_transformer_workload


def _build(workload, plan, tmp_path):
    report = {}
    model = compress_torch(plan, workload)
    proto = early_exit.build(plan, workload, model, report)
    path = tmp_path / "ee.onnx"
    onnx.save(proto, path)
    return ort_runner.make_session(path), model, report


def _rows(workload):
    for batch in workload.evaluation:
        n = len(next(iter(batch.values())))
        for i in range(n):
            yield {k: v[i:i + 1] for k, v in batch.items()}


def _check_branches(workload, plan, tmp_path):
    session, model, report = _build(workload, plan, tmp_path)
    rows = list(_rows(workload))
    torch_exit, torch_full, conf = [], [], []
    with torch.no_grad():
        for feed in rows:
            args = [torch.from_numpy(feed[n]) for n in workload.input_names]
            outs = report["prefix"](*args)
            if report["kind"] == "embedding":
                conf.append(float((outs[-2] * outs[-1]).sum()))
            else:
                conf.append(float(torch.softmax(outs[-1], -1).max()))
            torch_exit.append(outs[-1].numpy())
            torch_full.append(model(*args).numpy())
    threshold = float(np.median(conf))   # half the inputs on each side
    taken = []
    for feed, t_exit, t_full, c in zip(rows, torch_exit, torch_full, conf):
        forced_exit = session.run(None, {**feed, "exit_threshold": np.array(-np.inf, np.float32)})
        forced_full = session.run(None, {**feed, "exit_threshold": np.array(np.inf, np.float32)})
        out, flag = session.run(None, {**feed, "exit_threshold": np.array(threshold, np.float32)})
        assert bool(forced_exit[1]) and not bool(forced_full[1])
        np.testing.assert_allclose(forced_exit[0], t_exit, atol=1e-5)
        np.testing.assert_allclose(forced_full[0], t_full, atol=1e-5)
        assert not np.allclose(t_exit, t_full, atol=1e-3)   # the two paths really differ
        if abs(c - threshold) > 1e-5:                      # float ties aside
            assert bool(flag) == (c >= threshold)
        np.testing.assert_array_equal(out, forced_exit[0] if flag else forced_full[0])
        taken.append(bool(flag))
    assert 0 < sum(taken) < len(taken)
    # the plan's own threshold decides the same way the torch confidence does
    for feed, c in zip(rows, conf):
        flag = session.run(None, feed)[1]
        if abs(c - report["threshold"]) > 1e-5:
            assert bool(flag) == (c >= report["threshold"])


def test_cnn_exit_branches_exactly(tmp_path):
    _check_branches(exit_cnn_workload(), Plan({"blocks": {"exit_after": "blocks.1"}}), tmp_path)


def test_transformer_classifier_exit_branches_exactly(tmp_path):
    plan = Plan({"layers": {"exit_after": "layers.2", "exit_threshold": 0.8}})
    _check_branches(exit_transformer_workload(False), plan, tmp_path)


def test_embedding_exit_uses_consecutive_exit_cosine(tmp_path):
    plan = Plan({"layers": {"exit_after": "layers.2"}})
    _check_branches(exit_transformer_workload(True), plan, tmp_path)


def test_rest_segment_is_inside_the_if_and_quantized(tmp_path):
    workload = exit_cnn_workload()
    plan = Plan({"blocks": {"exit_after": "blocks.1"}, "blocks.3.conv": {"quant": "w8"},
                 "stem": {"quant": "w8"}})
    proto = onnx.load(apply_plan(plan, workload, tmp_path / "a.onnx").path)
    branch = next(n for n in proto.graph.node if n.op_type == "If")
    rest = next(a.g for a in branch.attribute if a.name == "else_branch")
    main_convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    rest_convs = [n for n in rest.node if n.op_type == "Conv"]
    assert len(main_convs) == 3 and len(rest_convs) == 2    # stem + blocks 0-1 | blocks 2-3
    assert {i.data_type for i in proto.graph.initializer if i.name.endswith("_q")} == \
        {onnx.TensorProto.INT8}                              # stem quantized in the prefix
    assert {i.data_type for i in rest.initializer if i.name.endswith("_q")} == \
        {onnx.TensorProto.INT8}                              # blocks.3 quantized in the rest


def test_artifact_bytes_are_deterministic(tmp_path):
    workload = exit_cnn_workload()
    plan = Plan({"blocks": {"exit_after": "blocks.2", "exit_threshold": 0.8}})
    a = apply_plan(plan, workload, tmp_path / "a.onnx")
    b = apply_plan(plan, workload, tmp_path / "b.onnx")
    assert a.sha256 == b.sha256 and a.path.read_bytes() == b.path.read_bytes()


def test_exit_rate_and_expected_latency(tmp_path):
    workload = exit_cnn_workload()
    plan = Plan({"blocks": {"exit_after": "blocks.1", "exit_threshold": 0.3}})
    metrics = Evaluator(workload, resolve_target("host"), artifact_root=tmp_path).evaluate(plan)
    session = ort_runner.make_session(tmp_path / f"{plan.digest()}.onnx")
    flags = [bool(session.run(None, feed)[1]) for feed in _rows(workload)]
    info = metrics.early_exit
    assert info["n_inputs"] == len(flags) == 32
    assert info["exit_rate"] == sum(flags) / len(flags)
    rate, e, f = info["exit_rate"], info["exit_path_latency"], info["full_path_latency"]
    expected = rate * e["median_s"] + (1 - rate) * f["median_s"]
    assert info["expected_latency_s"] == pytest.approx(expected, rel=1e-12)
    assert metrics.host_latency["median_s"] == pytest.approx(expected, rel=1e-12)
    assert metrics.target["latency_s"] == pytest.approx(expected, rel=1e-12)   # host target
    # the measure function itself, on a known decision list
    measured, latency = exit_runtime.measure(session, workload.example, [True, False, False, True],
                                             ort_runner.TimingConfig(warmup=1, repeat=5))
    assert measured.exit_rate == 0.5
    assert latency.median_s == pytest.approx(
        0.5 * measured.exit_path["median_s"] + 0.5 * measured.full_path["median_s"], rel=1e-12)


def test_predicted_latency_weights_both_paths(tmp_path):
    workload = exit_cnn_workload()
    plan = Plan({"blocks": {"exit_after": "blocks.1"}})
    path = apply_plan(plan, workload, tmp_path / "a.onnx").path
    profile = resolve_target("jetson-nano")
    from autocompress.cost_models.layers import describe
    from autocompress.cost_models.roofline import RooflineModel

    model = RooflineModel(profile)
    exit_model, full_model = exit_runtime.path_models(onnx.load(path))
    shapes = {"image": (1, 1, 6, 6)}
    e = model.predict(describe(exit_model, shapes)).latency_s
    f = model.predict(describe(full_model, shapes)).latency_s
    assert e < f
    graph, prediction = exit_runtime.expected_prediction(model, path, shapes, 0.25)
    assert prediction.latency_s == pytest.approx(0.25 * e + 0.75 * f, rel=1e-12)
    assert graph.macs == describe(full_model, shapes).macs


def test_knobs_offered_where_the_model_splits_and_explained_where_not():
    workload = exit_cnn_workload()
    args = [torch.from_numpy(workload.example["image"])]
    knobs, skips = early_exit.exit_knobs(workload.model, args)
    assert [(k.unit, k.name, k.choices) for k in knobs] == [
        ("blocks", "exit_after", ("none", "blocks.1", "blocks.2")),
        ("blocks", "exit_threshold", early_exit.CONFIDENCE_THRESHOLDS)]
    assert skips == []
    mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    knobs, skips = early_exit.exit_knobs(mlp, [torch.zeros(1, 4)])
    assert knobs == [] and len(skips) == 1 and "block container" in skips[0].reason


def test_static_calibration_composes_with_an_exit(tmp_path):
    workload = exit_cnn_workload()
    plan = Plan({"": {"calibration": "minmax"}, "blocks": {"exit_after": "blocks.1"},
                 "stem": {"quant": "w8"}, "blocks.3.conv": {"quant": "w4"}})
    path = apply_plan(plan, workload, tmp_path / "a.onnx").path
    proto = onnx.load(path)
    rest = next(a.g for n in proto.graph.node if n.op_type == "If" for a in n.attribute
                if a.name == "else_branch")
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)   # calibrated prefix
    assert any(n.op_type == "QuantizeLinear" for n in rest.node)          # calibrated rest
    session = ort_runner.make_session(path)
    for value in (-np.inf, np.inf):
        out, flag = session.run(None, {**workload.example,
                                       "exit_threshold": np.array(value, np.float32)})
        assert bool(flag) == (value < 0) and np.all(np.isfinite(out))


@pytest.mark.parametrize("make", [lambda: exit_transformer_workload(False), exit_cnn_workload])
def test_exit_with_random_other_knobs_loads_and_runs_both_paths(tmp_path, make):
    """An exit combined with any weight and structural knobs (one report once had a rest
    segment with clashing node names) is a valid model that runs down both branches."""
    import random

    from autocompress.api import discover_knobs
    from autocompress.search.space import params_to_plan

    workload, rng = make(), random.Random(0)
    knobs = discover_knobs(workload)
    exit_after = next(k for k in knobs if k.name == "exit_after")
    for i in range(6):
        params = {k.key: rng.choice(k.choices) for k in knobs
                  if k.name not in ("exit_after", "distill_steps", "replace")}
        params[exit_after.key] = rng.choice(exit_after.choices[1:])
        plan = params_to_plan(params, knobs)
        session = ort_runner.make_session(apply_plan(plan, workload, tmp_path / f"{i}.onnx").path)
        for value in (-np.inf, np.inf):
            out, flag = session.run(None, {**workload.example,
                                           "exit_threshold": np.array(value, np.float32)})
            assert bool(flag) == (value < 0), plan.to_json()
            assert out.shape[0] == 1
