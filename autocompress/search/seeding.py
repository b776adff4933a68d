"""Sensitivity shapes the search: catastrophic choices leave the space, greedy seeds enter it.

Input is plain data (knobs, each choice's measured quality drop and estimated bytes saved;
see ``autocompress.sensitivity``), so this module knows nothing of models.

- **Shaping**: a choice that alone costs more than ``CATASTROPHIC`` of the baseline quality
  is removed from its knob (e.g. a 1x1 conv at half rank taking a CNN to chance). The first
  choice ("leave as is") always stays.
- **Seeding**: for a ladder of total quality-drop allowances, a greedy multiple-choice
  knapsack picks per unit the choices with the most bytes saved per quality lost, assuming
  drops add up. Three kinds of seed, by which weight formats they may use (the sensitivity
  analysis times each format on the whole model against float, on this host):

  - "size": any choice;
  - "speed": layers with int8 kernels only take formats measured faster than float
    (``FASTER``; unmeasured: ``FAST_QUANT``), other layers any choice;
  - "no slower": every layer only takes formats measured at most ``NO_SLOWER`` times
    float (a palette or packed codes rebuilt to float when the session loads runs at
    float speed; ONNX Runtime's int8 convolution on a CPU without VNNI does not).

  Last come bolder seeds (``RECOVERY_LADDER``) that also take the most distillation steps.
  The seeds are enqueued after the fixed anchors, so the sampler starts from good points.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

from ..compression.knobs import Knob
from ..compression.plan import DISTILL_STEPS
from ..compression.registry import WEIGHT_KNOBS

CATASTROPHIC = 0.25
"""A choice whose drop alone exceeds this fraction of the baseline quality is removed."""

LADDER = (0.002, 0.005, 0.01, 0.02, 0.05)
"""Total quality-drop allowances of the seed plans, as fractions of the baseline quality."""

FAST_QUANT = ("float", "w8a8", "w8a8c", "w8a8cf")
FASTER = 0.95
NO_SLOWER = 1.10
"""Latency ratios to float: "faster" needs a 5% gain, "no slower" allows 10% (timing noise)."""
LADDERS = ("size", "speed", "no slower")
RECOVERY_LADDER = (0.1, 0.2)
"""Bolder allowances for seeds that also take the most distillation steps the space offers
(drops measured without training overstate what is left after recovery training); they
come after all the others, and as plans that train they are built as proxies first."""

DropFn = Callable[[Knob, object], "float | None"]
SavedFn = Callable[[Knob, object], "float | None"]
LatencyFn = Callable[[Knob, object], "float | None"]


def shape(knobs: Sequence[Knob], drop: DropFn, base_quality: float) -> list[Knob]:
    """Knobs without their catastrophic choices (a knob left with one choice is dropped)."""
    limit = CATASTROPHIC * abs(base_quality)
    out = []
    for knob in knobs:
        kept = tuple(c for i, c in enumerate(knob.choices)
                     if i == 0 or (drop(knob, c) is None or drop(knob, c) <= limit))
        if len(kept) > 1:
            out.append(replace(knob, choices=kept))
    return out


def seed_params(knobs: Sequence[Knob], drop: DropFn, saved: SavedFn,
                base_quality: float, latency: LatencyFn | None = None) -> list[dict]:
    """Greedy seed plans (Optuna params), smallest allowance first, each allowance in the
    order of ``LADDERS``. ``latency``: a weight format's measured latency ratio to float.

    Every choice costs at least the measurement's resolution (the smallest non-zero drop
    measured): a choice that measured "free" on a few hundred examples is not free in
    combination, and without a floor the greedy would take all of them at every allowance."""
    drops = [abs(d) for k in knobs for c in k.choices[1:] if (d := drop(k, c))]
    floor = min(drops, default=0.0)

    def floored(knob, choice):      # _greedy asks only for choices[1:]
        d = drop(knob, choice)
        return None if d is None else max(d, floor)

    latency = latency or (lambda knob, choice: None)
    recovery = next((k for k in knobs if k.name == DISTILL_STEPS), None)
    steps = [(fraction, ladder, None) for fraction in LADDER for ladder in LADDERS]
    if recovery is not None:
        steps += [(fraction, ladder, max(recovery.choices))
                  for fraction in RECOVERY_LADDER for ladder in ("no slower", "size")]
    seeds = []
    for fraction, ladder, distill in steps:
        params = _greedy(knobs, floored, saved, fraction * abs(base_quality), ladder, latency)
        if distill is not None:
            params[recovery.key] = distill
        if params not in seeds:
            seeds.append(params)
    return seeds


def _allowed(knob: Knob, choice, ladder: str, fast_units: set[str], latency: LatencyFn) -> bool:
    if ladder == "size" or knob.name not in WEIGHT_KNOBS:
        return True
    ratio = latency(knob, choice)
    if ladder == "no slower":
        return ratio is not None and ratio <= NO_SLOWER
    if knob.unit not in fast_units:
        return True
    if ratio is not None:
        return ratio <= FASTER
    return knob.name == "quant" and choice in FAST_QUANT   # unmeasured: int8 compute only


def _greedy(knobs: Sequence[Knob], drop: DropFn, saved: SavedFn, allowance: float,
            ladder: str, latency: LatencyFn) -> dict:
    """Multiple-choice knapsack by best saving per unit of drop; one weight choice and one
    structural choice per unit (their savings do not simply add on the same layer)."""
    fast_units = {k.unit for k in knobs if k.name == "quant" and "w8a8" in k.choices}
    options: dict[tuple[str, str], list[tuple[Knob, object, float, float]]] = {}
    for knob in knobs:
        group = (knob.unit, "weight" if knob.name in WEIGHT_KNOBS else "structure")
        for choice in knob.choices[1:]:
            d, s = drop(knob, choice), saved(knob, choice)
            if (d is None or s is None or s <= 0
                    or not _allowed(knob, choice, ladder, fast_units, latency)):
                continue
            options.setdefault(group, []).append((knob, choice, max(d, 0.0), s))
    chosen: dict[tuple[str, str], tuple[Knob, object, float, float]] = {}
    spent = 0.0
    while True:
        best, best_ratio = None, 0.0
        for group, opts in options.items():
            cur = chosen.get(group)
            cur_d, cur_s = (cur[2], cur[3]) if cur else (0.0, 0.0)
            for opt in opts:
                extra_d, extra_s = opt[2] - cur_d, opt[3] - cur_s
                if extra_s <= 0 or spent + extra_d > allowance:
                    continue
                ratio = extra_s / max(extra_d, 1e-9)
                if ratio > best_ratio:
                    best, best_ratio = (group, opt, extra_d), ratio
        if best is None:
            break
        group, opt, extra_d = best
        chosen[group] = opt
        spent += extra_d
    params = {k.key: k.choices[0] for k in knobs}
    for knob, choice, _, _ in chosen.values():
        params[knob.key] = choice
    return params
