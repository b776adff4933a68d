"""Knobs -> Optuna parameters -> Plan, and the anchor plans every study starts from."""
from __future__ import annotations

from typing import Sequence

from ..compression.knobs import Knob
from ..compression.plan import Plan


def suggest_plan(trial, knobs: Sequence[Knob]) -> Plan:
    """Ask the trial for one value per knob (categorical: choices are discrete by design)."""
    units: dict[str, dict] = {}
    for knob in knobs:
        value = trial.suggest_categorical(knob.key, list(knob.choices))
        if value != knob.choices[0]:
            units.setdefault(knob.unit, {})[knob.name] = value
    return Plan(units)


def params_to_plan(params: dict, knobs: Sequence[Knob]) -> Plan:
    units: dict[str, dict] = {}
    for knob in knobs:
        value = params.get(knob.key, knob.choices[0])
        if value != knob.choices[0]:
            units.setdefault(knob.unit, {})[knob.name] = value
    return Plan(units)


LADDER_LEVELS = (0.0, 0.35, 0.7, 1.0)
"""Uniform aggressiveness levels enqueued before the sampler starts."""


def anchor_params(knobs: Sequence[Knob]) -> list[dict]:
    """Footholds enqueued before the sampler starts: the uncompressed model and a ladder
    of uniform settings up to the most compressed corner, so the front spans the size
    range from the first trials and a tight budget has a feasible point to move from."""
    anchors = []
    for level in LADDER_LEVELS:
        params = {}
        for knob in knobs:
            ladder = _ladder(knob)
            params[knob.key] = ladder[round(level * (len(ladder) - 1))]
        if params not in anchors:
            anchors.append(params)
    return anchors


def _ladder(knob: Knob) -> list:
    """The knob's choices from gentlest to most compressing (int8 before int4)."""
    if knob.name == "quant":
        order = ("float", "w8a8", "w8", "w4")
        return sorted(knob.choices, key=order.index) if set(knob.choices) <= set(order) \
            else list(knob.choices)
    return list(knob.choices)
