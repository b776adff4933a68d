"""The Pareto front of a finished study, and the closest miss when nothing is feasible."""
from __future__ import annotations

from ..trial_record import metrics_of

from dataclasses import dataclass
from typing import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from .objectives import OBJECTIVES


def is_feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def front(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, non-dominated trials, one per distinct plan, best quality first."""
    feasible = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
                if is_feasible(t) and is_final(t)]
    return non_dominated(feasible, lambda t: t.values)


def is_final(trial) -> bool:
    """A full evaluation: a proxy's quality (training cut short) is never a result."""
    metrics = metrics_of(trial)
    return metrics is None or metrics.fidelity != "proxy"


def non_dominated(trials: Sequence, values: Callable) -> list:
    """The trials no other dominates on ``values(trial)`` (objective order of OBJECTIVES),
    one per distinct plan, best quality first. Serves the study's own objectives and the
    per-target fronts of a multi-target search."""
    unique: dict[str, object] = {}
    for trial in trials:
        unique.setdefault(trial.user_attrs.get("plan_digest", str(trial.number)), trial)
    points = [(t, tuple(values(t))) for t in unique.values()]
    kept = [(t, v) for t, v in points
            if not any(dominates(o, v) for _, o in points if o is not v)]
    return [t for t, v in sorted(kept, key=lambda tv: (-tv[1][0], tv[1][2]))]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    signs = [1 if d == "maximize" else -1 for _, d in OBJECTIVES]
    better_or_equal = all(s * x >= s * y for s, x, y in zip(signs, a, b))
    return better_or_equal and any(s * x > s * y for s, x, y in zip(signs, a, b))


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
