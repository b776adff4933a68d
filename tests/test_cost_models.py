"""Cost models: roofline arithmetic, fusion, size model, calibration on real ORT timings,
persistence, energy table, active measurement choice and the --cost option."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from autocompress.backends import ort_runner
from autocompress.cli import main
from autocompress.compression.apply import apply_plan
from autocompress.compression.plan import Plan
from autocompress.cost_models import active
from autocompress.cost_models.calibrated import CALIBRATED_NAME, MIN_SAMPLES, CalibratedModel
from autocompress.cost_models.model import CostModel, cost_model
from autocompress.cost_models.calibration import CalibrationStore
from autocompress.cost_models.energy import HOROWITZ_45NM_PJ, dynamic_energy_j, scaled_table
from autocompress.cost_models.layers import describe
from autocompress.cost_models.roofline import RooflineModel
from autocompress.cost_models.size import predict_size
from autocompress.device_profiles import known_targets, resolve_target

from tiny_workload import make_workload


def _profile(**changes):
    base = resolve_target("raspberry-pi-4")
    values = dict(peak_ops_per_s={"fp32": 1e9, "fp16": 1e9, "int8": 4e9}, efficiency=0.5,
                  memory_bandwidth_bytes_per_s=1e9, kernel_overhead_s=1e-6)
    values.update(changes)
    return dataclasses.replace(base, **values)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _matmul(k=64, n=128) -> onnx.ModelProto:
    w = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    return _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], {"w": w})


def test_matmul_roofline_is_exact():
    graph = describe(_matmul(), {"x": (1, 64)})
    (layer,) = graph.layers
    assert (layer.macs, layer.weight_bytes, layer.act_bytes) == (64 * 128, 64 * 128 * 4, 64 * 4 + 128 * 4)
    # compute 2*8192 / (1e9*0.5) = 32.768 us < memory (32768+768) / 1e9 = 33.536 us: memory-bound
    assert RooflineModel(_profile()).predict(graph).latency_s == pytest.approx(33.536e-6 + 1e-6, rel=1e-12)


def test_conv_roofline_is_compute_bound_and_relu_is_fused():
    w = np.ones((4, 3, 3, 3), np.float32)
    model = _model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                    helper.make_node("Relu", ["c"], ["r"]),
                    helper.make_node("Softmax", ["r"], ["y"], axis=1)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], {"w": w})
    graph = describe(model, {"x": (1, 3, 8, 8)})
    (conv,) = graph.layers
    assert conv.macs == 4 * 8 * 8 * 3 * 3 * 3 and conv.weight_bytes == 432
    assert conv.act_bytes == 3 * 64 * 4 + 4 * 64 * 4
    assert graph.fused == 1                                   # Relu rides on the Conv
    assert [(k.op, k.kind, k.bytes) for k in graph.kernels] == [("Softmax", "reduce", 2 * 256 * 4)]
    compute = 2 * 6912 / 0.5e9                                # 27.648 us > memory 2.224 us
    softmax = 2048 / 1e9
    assert RooflineModel(_profile()).predict(graph).latency_s == pytest.approx(
        compute + 1e-6 + softmax + 1e-6, rel=1e-12)


def test_int8_layers_use_the_int8_peak_and_energy():
    profile = _profile(memory_bandwidth_bytes_per_s=1e15)
    w = np.ones((64, 128), np.int8)
    model = _model([helper.make_node("MatMulInteger", ["x", "w"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 64])],
                   [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 128])], {"w": w})
    graph = describe(model, {"x": (1, 64)})
    assert graph.layers[0].dtype == "int8"
    assert RooflineModel(profile).layer_latency(graph.layers[0]) == pytest.approx(
        2 * 8192 / 2e9 + 1e-6, rel=1e-9)
    pj = profile.energy
    moved = graph.layers[0].weight_bytes + graph.layers[0].act_bytes
    assert dynamic_energy_j(profile, graph) == pytest.approx(
        (8192 * pj["pj_per_mac"]["int8"] + moved * pj["pj_per_dram_byte"]) * 1e-12, rel=1e-12)


def test_horowitz_table_scales():
    table = scaled_table(1.0)
    assert table["pj_per_mac"]["int8"] == pytest.approx(0.2 + 0.1)
    assert table["pj_per_mac"]["fp32"] == pytest.approx(3.7 + 0.9)
    assert table["pj_per_dram_byte"] == HOROWITZ_45NM_PJ["dram_32bit_read"] / 4 == 160.0
    assert scaled_table(0.5)["pj_per_mac"]["fp32"] == pytest.approx(2.3)


@pytest.mark.parametrize("plan", [
    Plan(),
    Plan({"fc1": {"quant": "w4"}, "fc2": {"quant": "w8a8"}}),
    Plan({"fc1": {"quant": "w2"}, "fc2": {"sparsity": 0.75}, "head": {"quant": "w16"}}),
], ids=["float", "w4-w8a8", "packed-sparse-fp16"])
def test_size_model_matches_the_file(plan, tmp_path):
    artifact = apply_plan(plan, make_workload(), tmp_path / "a.onnx")
    predicted, actual = predict_size(artifact.path), artifact.path.stat().st_size
    assert abs(predicted - actual) / actual < 0.01
    assert abs(predicted - actual) < 64          # a few bytes of framing per tensor at most


def _mlp(widths, softmax: bool, seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], {}, "x"
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        inits[f"w{i}"] = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Relu", [f"m{i}"], [f"h{i}"])]
        prev = f"h{i}"
    if softmax:
        nodes.append(helper.make_node("Softmax", [prev], ["s"], axis=-1))
        prev = "s"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, widths[0]])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, widths[-1]])], inits)


@pytest.fixture(scope="module")
def timed_models(tmp_path_factory):
    """18 small MLPs measured for real with ONNX Runtime: (GraphCost, median latency)."""
    root = tmp_path_factory.mktemp("mlps")
    out = []
    for i in range(18):
        depth = 1 + i % 4
        width = (64, 128, 256, 512, 768)[i % 5]
        model = _mlp([width] * (depth + 1), softmax=i % 3 == 0, seed=i)
        path = root / f"m{i}.onnx"
        onnx.save(model, path)
        session = ort_runner.make_session(path, 1)
        example = {"x": np.ones((16, width), np.float32)}
        latency = ort_runner.measure_latency(session, example, ort_runner.TimingConfig(3, 40, 1))
        out.append((describe(path, {"x": (16, width)}), latency.median_s))
    return out


def _mdape(model, pairs) -> float:
    return float(np.median([abs(model.latency_s(g) - y) / y for g, y in pairs]))


def _slowed(profile, factor: float):
    """The profile with every rate divided by factor: a roofline that is wrong by construction."""
    return dataclasses.replace(
        profile, peak_ops_per_s={k: v / factor for k, v in profile.peak_ops_per_s.items()},
        memory_bandwidth_bytes_per_s=profile.memory_bandwidth_bytes_per_s / factor,
        kernel_overhead_s=profile.kernel_overhead_s * factor)


def test_calibration_lowers_the_error_on_held_out_models(timed_models, tmp_path, monkeypatch):
    # The host roofline can already be within a few percent on one CPU and not on another, so
    # the claim is pinned where it must hold on any CPU: a roofline ten times too slow.
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    model = cost_model(_slowed(resolve_target("host"), 10.0))
    fit, held_out = timed_models[::3] + timed_models[1::3], timed_models[2::3]
    uncalibrated = _mdape(model, held_out)
    assert model.name == "roofline-v0" and model.predict(fit[0][0]).calibration_error is None
    assert uncalibrated > 2
    for i, (graph, latency) in enumerate(fit):
        model.observe(graph, f"mlp:{i}", latency, None, "host test")
    assert len(fit) >= MIN_SAMPLES and model.name == CALIBRATED_NAME
    calibrated = _mdape(model, held_out)
    assert calibrated < 0.5 and calibrated < uncalibrated / 4
    prediction = model.predict(held_out[0][0])
    assert prediction.calibration_error == model.latency_error_ > 0
    assert prediction.uncertainty is not None and prediction.uncertainty >= 0


def test_calibration_on_the_host_profile_stays_usable(timed_models, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    model = cost_model(resolve_target("host"))
    fit, held_out = timed_models[::3] + timed_models[1::3], timed_models[2::3]
    for i, (graph, latency) in enumerate(fit):
        model.observe(graph, f"mlp:{i}", latency, None, "host test")
    assert model.name == CALIBRATED_NAME and _mdape(model, held_out) < 0.5


def test_calibration_persists_per_device_as_json(timed_models, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    profile = _profile()
    model = cost_model(profile)
    for i, (graph, latency) in enumerate(timed_models[:10]):
        model.observe(graph, f"mlp:{i}", latency, 1e6 + graph.weight_bytes, "board x")
    model.observe(timed_models[0][0], "mlp:0", timed_models[0][1], 1e6 + timed_models[0][0].weight_bytes,
                  "board x")   # the same candidate again replaces, not duplicates
    path = tmp_path / "calibration" / "raspberry-pi-4.json"
    document = json.loads(path.read_text())
    assert document["n_samples"] == 10 and len(document["samples"]) == 10
    assert document["fit"]["latency_mdape_cv"] == model.latency_error_
    again = cost_model(profile)
    graph = timed_models[12][0]
    assert again.predict(graph) == model.predict(graph)
    assert again.ram_provenance() == model.ram_provenance() and again.ram_provenance()[1] is not None
    assert CalibrationStore.load("jetson-nano").samples == []   # other devices untouched


def test_active_choice_measures_first_unsure_and_uncalibrated():
    calibrated = {"calibration_error": 0.05}
    assert active.decide("auto", 0, calibrated, 0.0)[0]
    assert active.decide("auto", 5, {"calibration_error": None}, None)[0]
    assert active.decide("auto", 5, calibrated, 0.2) == (True, "model unsure: ensemble spread 20.0% > 5%")
    assert not active.decide("auto", 5, calibrated, 0.01)[0]
    assert active.decide("measured", 99, calibrated, 0.0)[0]
    assert not active.decide("predicted", 0, calibrated, 1.0)[0]


def test_cost_measured_on_an_unreachable_target_is_one_error_line(capsys, tmp_path):
    code = main(["search", "--model", "tests.tiny_workload:make_workload", "--target",
                 "raspberry-pi-4", "--cost", "measured", "--trials", "1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("autocompress: error: --cost measured")
    assert not (tmp_path / "r").exists()


def test_predicted_cost_on_host_states_the_model_and_feeds_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    from autocompress.pipeline import Evaluator

    evaluator = Evaluator(make_workload(), resolve_target("host"), artifact_root=tmp_path / "a",
                          cost="predicted")
    metrics = evaluator.evaluate(Plan({"fc1": {"quant": "w8"}}))
    prov = metrics.target["provenance"]
    assert prov["latency_s"]["kind"] == "predicted" and prov["latency_s"]["device"] == "host"
    assert metrics.target["latency_s"] != metrics.host_latency["median_s"]
    samples = json.loads((tmp_path / "calibration" / "host.json").read_text())["samples"]
    assert [s["latency_s"] for s in samples] == [metrics.host_latency["median_s"]]


def test_active_search_records_which_candidates_the_board_measured(tmp_path, monkeypatch):
    """A real loopback TVM board: the first candidates are measured there and join the
    board's own calibration file; --cost predicted leaves the board alone."""
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    from autocompress.backends import tvm_rpc
    from autocompress.pipeline import Evaluator

    workload = make_workload()
    plans = [Plan(), Plan({"fc1": {"quant": "w8"}}), Plan({"fc2": {"quant": "w4"}}),
             Plan({"head": {"quant": "w8"}})]
    with tvm_rpc.local_farm(boards=1, key="host") as device:
        auto = Evaluator(workload, resolve_target("host"), artifact_root=tmp_path / "a",
                         device=device, cost="auto")
        decisions = [auto.evaluate(p).target for p in plans]
        predicted = Evaluator(workload, resolve_target("host"), artifact_root=tmp_path / "a",
                              device=device, cost="predicted").evaluate(Plan({"fc1": {"quant": "w4"}}))
    reasons = [t["cost_decision"]["reason"] for t in decisions]
    assert reasons[:3] == ["one of the first 3 candidates (calibration samples)"] * 3
    assert reasons[3] == "model not yet calibrated on this device"
    assert all(t["provenance"]["latency_s"]["runtime"].startswith("TVM") for t in decisions)
    board = json.loads((tmp_path / "calibration" / "host-tvm.json").read_text())["samples"]
    assert [s["latency_s"] for s in board] == [t["latency_s"] for t in decisions]
    assert all(s["source"].startswith("board") for s in board)
    assert predicted.target["cost_decision"]["measured_on_device"] is False
    assert predicted.target["provenance"]["latency_s"]["kind"] == "predicted"


def test_concurrent_writers_keep_each_others_samples(timed_models, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    profile = resolve_target("host")
    first, second = cost_model(profile), cost_model(profile)
    (g1, y1), (g2, y2) = timed_models[:2]
    first.observe(g1, "worker-1", y1, None, "host test")
    second.observe(g2, "worker-2", y2, None, "host test")
    assert [s.key for s in CalibrationStore.load("host").samples] == ["worker-1", "worker-2"]


# --------------------------------------------------------------------------- contract


def _graphs():
    """Matmul graphs of growing size: what every cost model must rank the same way."""
    return [describe(_matmul(k, n), {"x": (1, k)}) for k, n in
            ((32, 32), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512),
             (512, 512), (512, 1024), (1024, 1024))]


def _kinds(profile):
    """Every cost model the package has, for ``profile``: the roofline, the calibrated model
    before any sample, and after ten (measured = 1.3 x the roofline, not persisted)."""
    fitted = CalibratedModel(profile, CalibrationStore(profile.name), persist=False)
    roofline = RooflineModel(profile)
    for i, graph in enumerate(_graphs()):
        fitted.observe(graph, f"g{i}", 1.3 * roofline.latency_s(graph), None, "contract test")
    return {"roofline": roofline,
            "uncalibrated": CalibratedModel(profile, CalibrationStore(profile.name),
                                            persist=False),
            "calibrated": fitted}


@pytest.mark.parametrize("target", known_targets())
def test_every_cost_model_on_every_profile_keeps_the_contract(target, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    profile = resolve_target(target)
    graphs = _graphs()
    for kind, model in _kinds(profile).items():
        assert isinstance(model, CostModel) and model.name, kind
        predictions = [model.predict(g) for g in graphs]
        for p in predictions:
            assert np.isfinite([p.latency_s, p.energy_j, p.peak_ram_bytes]).all(), kind
            assert p.latency_s > 0 and p.energy_j > 0 and p.peak_ram_bytes > 0, kind
            assert p.model == model.name
        latencies = [p.latency_s for p in predictions]
        assert latencies == sorted(latencies), f"{kind}: a larger matmul predicted faster"
        assert (predictions[0].calibration_error is None) == (kind != "calibrated"), kind
    assert not (tmp_path / "calibration").exists()     # persist=False wrote nothing
    assert isinstance(cost_model(profile), CostModel)
