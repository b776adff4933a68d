"""Knobs -> Optuna parameters -> Plan, and the anchor plans every study starts from."""
from __future__ import annotations

from typing import Sequence

from ..compression import registry
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


ANCHOR_QUANT = ("w8a8cf", "w8a8c", "w8a8", "w4", "w8")
"""Uniform quantization settings enqueued as anchors (low-risk, large wins). An int8-kernel
anchor stores embedding tables (no int8 matmul there) as int8 rows, as ONNX Runtime's
``quantize_dynamic`` does."""


def anchor_params(knobs: Sequence[Knob]) -> list[dict]:
    """Footholds enqueued before the sampler starts: the uncompressed model, the most
    compressed corner (so a tight budget has a feasible point to move from), and uniform
    quantization at each precision with no structural change. Uniform structural settings
    are not anchors: per-layer sensitivity differs by orders of magnitude (one 1x1 conv at
    half rank can take a CNN to chance), which is what the per-layer search is for."""
    identity = {k.key: k.choices[0] for k in knobs}
    smallest = {k.key: _most_compressing(k) for k in knobs}
    anchors = [identity, smallest]
    for choice in ANCHOR_QUANT:
        params = {k.key: _anchor_choice(k, choice) for k in knobs}
        anchors.append(params)
    return [a for i, a in enumerate(anchors) if a not in anchors[:i]]


def _anchor_choice(knob: Knob, quant: str):
    from ..compression.weights.storage import DYNAMIC_INT8

    if knob.name != "quant":
        return knob.choices[0]
    if quant in knob.choices:
        return quant
    if quant in DYNAMIC_INT8 and "w8a8" not in knob.choices and "w8" in knob.choices:
        return "w8"     # a table no int8 kernel reads
    return knob.choices[0]


def _most_compressing(knob: Knob):
    """Knobs that do not make the artifact smaller (distillation and calibration cost trial
    time; an early exit adds a head) stay as they are in the smallest corner."""
    if not registry.spec(knob.name).shrinks:
        return knob.choices[0]
    if knob.name == "quant":
        return "w4" if "w4" in knob.choices else knob.choices[-1]
    return knob.choices[-1]
