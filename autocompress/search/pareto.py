"""The Pareto front of a finished study, and the closest miss when nothing is feasible."""
from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from .objectives import OBJECTIVES


def is_feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def _dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
    signs = [1 if d == "maximize" else -1 for _, d in OBJECTIVES]
    better_or_equal = all(s * x >= s * y for s, x, y in zip(signs, a.values, b.values))
    return better_or_equal and any(s * x > s * y for s, x, y in zip(signs, a.values, b.values))


def front(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, non-dominated trials, one per distinct plan, best quality first."""
    feasible = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if is_feasible(t)]
    unique: dict[str, FrozenTrial] = {}
    for trial in feasible:
        unique.setdefault(trial.user_attrs.get("plan_digest", str(trial.number)), trial)
    points = list(unique.values())
    kept = [t for t in points if not any(_dominates(o, t) for o in points if o is not t)]
    return sorted(kept, key=lambda t: (-t.values[0], t.values[2]))


@dataclass(frozen=True)
class ClosestMiss:
    trial: FrozenTrial
    violated: dict[str, float]


def closest_miss(study: optuna.Study) -> ClosestMiss | None:
    """The complete trial with the smallest total constraint violation."""
    done = study.get_trials(states=(TrialState.COMPLETE,))
    if not done:
        return None
    best = min(done, key=lambda t: sum(max(0.0, v) for v in t.constraints.values()))
    return ClosestMiss(best, {k: v for k, v in best.constraints.items() if v > 0})
