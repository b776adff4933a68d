"""sensitivity.py: each choice measured alone (two routes that agree) and cached, gentler
choices bounded by a free harsher one, and the bytes a weight format saves are the bytes its
artifact saves."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from autocompress import api, sensitivity
from autocompress.api import discover_knobs
from autocompress.compression.apply import apply_plan
from autocompress.compression.knobs import Knob
from autocompress.compression.plan import Plan
from autocompress.compression.registry import WEIGHT_KNOBS
from autocompress.sensitivity import _Probe
from tests.conv_workload import make_workload


def test_weight_format_savings_are_the_artifacts_within_a_few_bytes(tmp_path):
    """Scales, zero points and rebuild nodes are counted, which the bits per weight alone
    leave out (one fp32 scale per output channel, a node per weight)."""
    workload = make_workload()
    probe = _Probe(workload)
    base = apply_plan(Plan(), workload, tmp_path / "base.onnx").size_bytes
    checked = 0
    for knob in discover_knobs(workload):
        if knob.name not in WEIGHT_KNOBS:
            continue
        for choice in knob.choices[1:]:
            real = base - apply_plan(Plan({knob.unit: {knob.name: choice}}), workload,
                                     tmp_path / "one.onnx").size_bytes
            estimated = probe._weight_saved(knob, choice)
            assert abs(estimated - real) <= max(64, 0.02 * abs(real)), (knob.key, choice)
            checked += 1
    assert checked >= 20


TINY = "tests.tiny_workload:make_workload"


def test_sensitivity_measures_each_choice_alone_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    workload = api.load_workload(TINY)
    knobs = api.discover_knobs(workload)
    result = sensitivity.analyse(workload, knobs)
    measured = [k for k in knobs if sensitivity.measurable(k)]
    assert {k.key for k in measured} <= set(result.drops)
    assert result.drop(measured[0], measured[0].choices[0]) == 0.0
    fc1_w2 = next(k for k in knobs if k.key == "fc1:quant")
    assert result.drop(fc1_w2, "w16") == pytest.approx(0.0, abs=0.01)
    prune = next(k for k in knobs if k.name == "prune_ratio")
    assert result.drop(prune, 0.75) > result.drop(prune, 0.25) - 0.01
    # 24 of 32 bits per weight, less what w8 stores beside the codes: one fp32 scale per
    # output column (128) and its DequantizeLinear node (measured, not counted from bits)
    saved = result.saved_bytes(fc1_w2, "w8")
    assert 64 * 128 * 3 - 128 * 4 - 160 <= saved <= 64 * 128 * 3 - 128 * 4
    # every weight format timed model-wide against float
    formats = {f"{k.name}:{sensitivity.choice_key(c)}" for k in knobs
               if sensitivity.probe(k) == "weights" for c in k.choices[1:]}
    assert set(result.format_latency) == formats
    assert all(0 < r < 100 for r in result.format_latency.values())
    assert result.latency_ratio(fc1_w2, "w8a8") == result.format_latency['quant:"w8a8"']
    # the same model again: read from the cache, not measured again
    files = list((tmp_path / "sensitivity").glob("*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    stored["base_quality"] = -1.0          # marker: proves the next call reads the file
    files[0].write_text(json.dumps(stored))
    assert sensitivity.analyse(workload, knobs).base_quality == -1.0


def test_agreement_with_the_uncompressed_outputs():
    ref = [np.array([[1.0, 0.0], [0.0, 1.0]])]
    same = sensitivity._agreement("embedding", ref, ref)
    assert same == pytest.approx(1.0)
    assert sensitivity._agreement("embedding", [np.array([[1.0, 1.0], [0.0, 1.0]])], ref) == \
        pytest.approx((np.sqrt(0.5) + 1) / 2)
    assert sensitivity._agreement("logits", [np.array([[0.0, 1.0], [0.0, 1.0]])], ref) == 0.5


def test_sensitivity_routes_agree_torch_weights_equal_the_stored_ones():
    """The torch route (weights replaced by what the artifact stores, w8a8 inputs quantized
    like DynamicQuantizeLinear) gives the quality ONNX Runtime gives on the real graph."""
    workload = api.load_workload(TINY)
    knobs = {k.key: k for k in api.discover_knobs(workload)}
    probe = sensitivity._Probe(workload)
    for key, choice in (("fc1:quant", "w2"), ("fc1:quant", "w8a8"), ("fc2:sparsity", 0.9),
                        ("fc2:clusters", 16)):
        probe.use_onnx = True
        onnx_quality = probe.quality(knobs[key], choice)[0]
        probe.use_onnx = False
        torch_quality = probe.quality(knobs[key], choice)[0]
        assert torch_quality == pytest.approx(onnx_quality, abs=0.006), (key, choice)
    assert probe.quality(knobs["fc1:quant"], "w2")[0] < probe.base_quality


def test_a_slow_onnx_file_is_probed_on_its_first_input_sets_by_output_cosine(
        tmp_path, monkeypatch):
    """A foreign file's input sets are one row each: a slow one is probed on its first
    SUBSET_SETS sets, each choice scored as the cosine of its outputs to the uncompressed
    ones there (the stored weights, run by ONNX Runtime); a fast one on every set."""
    from autocompress.backends.ort_runner import make_session, run_batches
    from autocompress.workloads.onnx_metrics import cosine_quality
    from tests import foreign_models

    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    workload = api.load_workload(str(foreign_models.constant_mlp(tmp_path / "mlp.onnx")))
    knob = next(k for k in api.discover_knobs(workload) if k.key == "w1:quant")
    assert len(sensitivity._Probe(workload).batches) == len(workload.evaluation)

    monkeypatch.setattr(sensitivity, "FULL_PASS_LIMIT_S", 0.0)     # every pass is slow now
    probe = sensitivity._Probe(workload)
    n = sensitivity.SUBSET_SETS
    assert len(probe.batches) == n < len(workload.evaluation)
    assert f"first {n} of {len(workload.evaluation)} input sets" in probe.engine
    assert probe.base_quality == pytest.approx(1.0)
    quality, _ = probe.quality(knob, "w2")
    stored = apply_plan(Plan({"w1": {"quant": "w2"}}), workload, tmp_path / "w2.onnx")
    first = workload.evaluation[:n]
    expected = cosine_quality(run_batches(make_session(stored.path), first),
                              run_batches(make_session(workload.onnx_path), first)).value
    assert quality == pytest.approx(expected, abs=1e-5)
    assert quality < 0.999


def test_gentler_choices_are_bounded_by_a_free_harsher_one():
    quant = Knob("a", "quant", ("float", "w8", "w4", "w8a8", "w16", "w3", "w2"), "quantization")
    assert sensitivity.harshest_first(quant) == [["w2", "w3", "w4", "w8", "w16"], ["w8a8"]]
    prune = Knob("a", "prune_ratio", (0.0, 0.25, 0.5, 0.75), "pruning")
    assert sensitivity.harshest_first(prune) == [[0.75, 0.5, 0.25]]


def test_a_torch_workload_whose_onnx_pass_is_slow_keeps_every_row(monkeypatch):
    """The input-set subset is for ONNX files: a torch workload whose torch pass is fast is
    probed in torch on its whole evaluation set, however slow its ONNX pass."""
    import time as clock

    onnx_outputs = sensitivity._Probe._onnx_outputs

    def slow(self, proto):
        clock.sleep(sensitivity.FULL_PASS_LIMIT_S + 0.1)
        return onnx_outputs(self, proto)

    monkeypatch.setattr(sensitivity._Probe, "_onnx_outputs", slow)
    tiny = api.load_workload(TINY)
    rows = [{"x": b["x"][i:i + 20]} for b in tiny.evaluation for i in range(0, len(b["x"]), 20)]
    workload = dataclasses.replace(tiny, evaluation=rows)      # more sets than SUBSET_SETS
    assert len(rows) > sensitivity.SUBSET_SETS
    probe = sensitivity._Probe(workload)
    assert probe.engine == "torch" and probe.reference is None
    assert len(probe.batches) == len(rows)
    knob = next(k for k in api.discover_knobs(workload) if k.key == "fc1:quant")
    assert probe.quality(knob, "w2")[0] < probe.base_quality
