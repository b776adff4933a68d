"""Multi-fidelity: which proxy-evaluated candidates earn a full evaluation.

A plan that trains (distillation, replaced modules, exit heads, static calibration) is first
built with a fraction of its training budget. Size and latency of the proxy are the final
ones (same graph); only quality is an underestimate. The proxy is promoted to a full
evaluation unless it could not matter even if full training raised its quality by
``margin``: it breaks a size/latency/energy limit, cannot reach the minimum quality, or a
fully evaluated feasible trial dominates it. ``margin`` learns from the promotions so far
(the ``MARGIN_QUANTILE`` percentile of the observed gains, full minus proxy quality: the
largest gains come from training rescuing a broken model, which stays dominated anyway),
never below ``MARGIN_FLOOR`` of the best quality seen. A proxy that stays below half the
best feasible quality even with the margin is not promoted either. A dominated proxy stays
dominated, so it can never reach the final front.
"""
from __future__ import annotations

from ..trial_record import metrics_of

from typing import Sequence

import numpy as np

from optuna.trial import FrozenTrial, TrialState

from .hypervolume import REFERENCE
from .objectives import Budget
from .pareto import dominates, is_feasible, is_final

MARGIN_FLOOR = 0.05
USEFUL_QUALITY = REFERENCE[0]
"""A proxy that even with the margin keeps less than this fraction of the best feasible
quality is not promoted: nobody deploys it, and the hypervolume's reference point leaves
it out. While no feasible trial has quality (a very tight budget), this rule is off."""
MARGIN_QUANTILE = 75
PROXY_QUALITY = "proxy_quality"     # trial user attr: the proxy's quality of a promoted trial


def margin(trials: Sequence[FrozenTrial]) -> float:
    done = [(t, metrics_of(t)) for t in trials if t.state == TrialState.COMPLETE]
    done = [(t, m) for t, m in done if m is not None]
    best = max((abs(m.quality) for _, m in done), default=1.0)
    gains = [m.quality - t.user_attrs[PROXY_QUALITY] for t, m in done
             if PROXY_QUALITY in t.user_attrs]
    return max(MARGIN_FLOOR * best, float(np.percentile(gains, MARGIN_QUANTILE)) if gains else 0.0)


def promising(metrics, trials: Sequence[FrozenTrial], budget: Budget) -> tuple[bool, str]:
    """(promote?, why) for a proxy-evaluated candidate against the study's trials so far."""
    gain = margin(trials)
    hard = {k: v for k, v in budget.violations(metrics).items() if k != "quality"}
    if any(v > 0 for v in hard.values()):
        return False, f"breaks {', '.join(k for k, v in hard.items() if v > 0)} (exact at proxy)"
    optimistic = metrics.quality + gain
    if budget.min_quality is not None and optimistic < budget.min_quality:
        return False, f"proxy quality + margin {gain:.4f} stays below the minimum"
    feasible = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None
                and is_feasible(t) and is_final(t)]
    best = max((t.values[0] for t in feasible), default=None)
    if best is not None and best > 0 and optimistic < USEFUL_QUALITY * best:
        return False, (f"proxy quality + margin {gain:.4f} stays below {USEFUL_QUALITY:g} of the "
                       f"best feasible quality {best:.4f}")
    values = (optimistic, metrics.objective("latency_s"), metrics.objective("size_bytes"))
    for t in feasible:
        if dominates(t.values, values):
            return False, f"trial {t.number} dominates it even with a quality margin of {gain:.4f}"
    return True, f"non-dominated with a quality margin of {gain:.4f}"
