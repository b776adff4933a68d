"""The Optuna study: storage, constrained multi-objective sampler, trials, resume.

A trial proposes a Plan, hands it to an injected ``evaluate`` callable (this module
knows nothing of models or runtimes), records the metrics and the budget's
constraints. A failing or overlong candidate becomes a FAIL trial with its reason.
"""
from __future__ import annotations

import signal
import threading
import traceback
from contextlib import contextmanager
from typing import Callable, Sequence

import optuna
from optuna.trial import TrialState

from ..compression.knobs import Knob
from .objectives import OBJECTIVES, Budget
from .space import anchor_params, suggest_plan

optuna.logging.set_verbosity(optuna.logging.WARNING)

FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


class TrialTimeout(Exception):
    """A candidate that ran past the per-trial time limit."""


def make_sampler(seed: int, n_trials: int) -> optuna.samplers.BaseSampler:
    """Multi-objective TPE; it reads the constraints each trial sets (Optuna >= 5)."""
    return optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                      n_startup_trials=max(3, min(10, n_trials // 3)))


def open_study(storage: str, study_name: str, seed: int, n_trials: int,
               knobs: Sequence[Knob]) -> optuna.Study:
    """Create the study (with anchor plans enqueued) or load it to resume."""
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    study = optuna.create_study(
        storage=storage, study_name=study_name, load_if_exists=True,
        sampler=make_sampler(seed, n_trials), directions=[d for _, d in OBJECTIVES])
    if study_name not in existing:
        for params in anchor_params(knobs)[:max(1, n_trials)]:
            study.enqueue_trial(params, skip_if_exists=True)
    return study


def mark_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a killed search become FAIL ("interrupted"); returns how many."""
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason",
                                           "interrupted: the search process stopped mid-trial")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return len(stale)


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_trials(study: optuna.Study, knobs: Sequence[Knob], evaluate: Callable, budget: Budget,
               n_trials: int, timeout_s: float | None = None, trial_timeout_s: float | None = None,
               callbacks: Sequence[Callable] = ()) -> None:
    """Run until the study holds ``n_trials`` finished trials (or ``timeout_s`` passes)."""
    cache = _metrics_cache(study)
    remaining = n_trials - finished_count(study)
    if remaining <= 0:
        return

    def objective(trial: optuna.Trial):
        plan = suggest_plan(trial, knobs)
        trial.set_user_attr("plan", plan.to_dict())
        trial.set_user_attr("plan_digest", plan.digest())
        try:
            metrics = cache.get(plan.digest())
            if metrics is None:
                with time_limit(trial_timeout_s):
                    metrics = evaluate(plan)
                cache[plan.digest()] = metrics
            else:
                trial.set_user_attr("reused_from_cache", True)
        except Exception as err:
            reason = f"{type(err).__name__}: {err}".strip().splitlines()[0][:500]
            trial.set_user_attr("fail_reason", reason)
            trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            raise
        trial.set_user_attr("metrics", metrics.to_dict())
        for name, value in budget.violations(metrics).items():
            trial.set_constraint(name, value)
        return tuple(metrics.objective(name) for name, _ in OBJECTIVES)

    study.optimize(objective, n_trials=remaining, timeout=timeout_s, catch=(Exception,),
                   callbacks=list(callbacks), gc_after_trial=False)


def _metrics_cache(study: optuna.Study) -> dict:
    """Plans already measured in this study: a repeated proposal reuses its numbers."""
    from ..pipeline import TrialMetrics

    cache = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if "metrics" in trial.user_attrs:
            cache[trial.user_attrs["plan_digest"]] = TrialMetrics.from_dict(trial.user_attrs["metrics"])
    return cache


@contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`TrialTimeout` after ``seconds`` (main thread only; elsewhere no limit)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise TrialTimeout(f"trial exceeded its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
