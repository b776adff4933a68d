"""sensitivity.py: the bytes a weight format saves are the bytes its artifact saves."""
from __future__ import annotations

from autocompress.api import discover_knobs
from autocompress.compression.apply import apply_plan
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
