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


def anchor_params(knobs: Sequence[Knob]) -> list[dict]:
    """Footholds enqueued before the sampler starts: the uncompressed model, uniform
    int8 (the usual first try), and the most compressed corner (so a tight budget
    has at least one feasible point to move from)."""
    identity = {k.key: k.choices[0] for k in knobs}
    int8 = dict(identity)
    for knob in knobs:
        if knob.name == "quant":
            int8[knob.key] = "w8a8" if "w8a8" in knob.choices else "w8"
    smallest = {k.key: _most_compressing(k) for k in knobs}
    anchors = [identity, int8, smallest]
    return [a for i, a in enumerate(anchors) if a not in anchors[:i]]


def _most_compressing(knob: Knob):
    if knob.name == "quant":
        return "w4" if "w4" in knob.choices else knob.choices[-1]
    return knob.choices[-1]
