"""Which candidates to measure on an attached board (``--cost``), and why.

``measured``: every candidate. ``predicted``: none (the board only calibrates nothing).
``auto``: the first ``FIRST`` candidates (the model needs samples of this device), every
candidate while the model is uncalibrated on the device, and afterwards those whose
bootstrap ensemble disagrees by more than ``UNSURE`` (relative spread) or whose predicted
latency the model is least sure of; the rest are predicted. The reason is recorded.
"""
from __future__ import annotations

COST_MODES = ("measured", "predicted", "auto")
FIRST = 3
UNSURE = 0.05


def decide(cost: str, measured_so_far: int, provenance: dict,
           uncertainty: float | None) -> tuple[bool, str]:
    """(measure on the device?, one-line reason)."""
    if cost == "measured":
        return True, "--cost measured: every candidate is measured on the device"
    if cost == "predicted":
        return False, "--cost predicted: the cost model's prediction"
    if measured_so_far < FIRST:
        return True, f"one of the first {FIRST} candidates (calibration samples)"
    if provenance.get("calibration_error") is None or uncertainty is None:
        return True, "model not yet calibrated on this device"
    if uncertainty > UNSURE:
        return True, f"model unsure: ensemble spread {uncertainty:.1%} > {UNSURE:.0%}"
    return False, f"predicted: ensemble spread {uncertainty:.1%} <= {UNSURE:.0%}"
