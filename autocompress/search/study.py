"""The Optuna study: storage, constrained multi-objective sampler, trials, resume.

A trial proposes a Plan, hands it to an injected ``evaluate`` callable (this module
knows nothing of models or runtimes), records the metrics and the budget's
constraints. A failing or overlong candidate becomes a FAIL trial with its reason.

Crash-safe by construction: the queue (anchors, seeds, blanks) is complete or marked
pending until it is (``QUEUE_ATTR``), a killed trial goes back to the queue with its
parameters (search/storage.py), and the sampler draws trial N's random numbers from
(seed, N) alone, so a resumed search proposes what the undisturbed one would have.
"""
from __future__ import annotations

import logging
import re
import signal
import threading
import traceback
from contextlib import contextmanager
from typing import Callable, Sequence

import optuna
from optuna.trial import TrialState

from ..compression.knobs import Knob
from ..crash_hook import crash_at, stop_at
from ..crash_note import tell
from ..trial_record import METRICS_ATTR, metrics_of
from .fidelity import PROXY_QUALITY, promising
from .objectives import OBJECTIVES, Budget
from .queue import fill as fill_queue
from .space import anchor_params, suggest_plan
from .storage import fail_stale, is_heartbeat_enabled, open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


class _NoFailedTrialDump(logging.Filter):
    """Optuna logs a failed trial with every parameter and a traceback (some 80 lines);
    the reason and traceback are in the trial's user attrs, and the CLI prints one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not re.match(r"Trial \d+ failed", record.getMessage())


logging.getLogger("optuna.study._optimize").addFilter(_NoFailedTrialDump())
QUEUE_ATTR = "autocompress:queue_pending"   # True until every anchor and blank is enqueued

FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


class TrialTimeout(Exception):
    """A candidate that ran past the per-trial time limit."""


SAMPLERS = ("tpe", "random", "nsga2")


def make_sampler(seed: int, n_trials: int, kind: str = "tpe") -> optuna.samplers.BaseSampler:
    """Multi-objective TPE (ours); it reads the constraints each trial sets (Optuna >= 5).
    ``random`` and ``nsga2`` (Optuna's defaults) are the baselines benchmarks compare with."""
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)   # keeps generations: not reseeded
    if kind == "random":
        def make(s):
            return optuna.samplers.RandomSampler(seed=s)
    else:
        def make(s):
            return optuna.samplers.TPESampler(seed=s, multivariate=True,
                                              n_startup_trials=max(3, min(10, n_trials // 3)))
    return make(seed) if seed is None else PerTrialSeed(make, seed)


class PerTrialSeed(optuna.samplers.BaseSampler):
    """A sampler for each trial, seeded with (seed, trial number): what trial N proposes
    depends on the finished trials only, not on how many processes sampled before it (a
    sampler's random state restarts with every resumed or worker process)."""

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int):
        self._make, self._seed = make, seed
        self._number, self._inner = None, None

    def _for(self, trial) -> optuna.samplers.BaseSampler:
        if trial.number != self._number:
            self._number = trial.number
            self._inner = self._make((self._seed * 1_000_003 + trial.number) % 2**32)
        return self._inner

    def infer_relative_search_space(self, study, trial):
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._for(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        pass   # deterministic by design


def open_study(storage: str, study_name: str, seed: int, n_trials: int,
               knobs: Sequence[Knob], seeds: Sequence[dict] = (), sampler: str = "tpe",
               anchors: bool = True, attrs: dict | None = None) -> optuna.Study:
    """Create the study (with anchor plans enqueued) or load it to resume; either way its
    queue then holds ``n_trials`` trials in all (search/queue.py). A queue whose creation
    was killed is completed in the same order (``QUEUE_ATTR``)."""
    study = create_study(storage, study_name, seed, n_trials, sampler)
    pending = study.user_attrs.get(QUEUE_ATTR, not study.get_trials(deepcopy=False))
    for key, value in (attrs or {}).items():    # before any trial: the space they are sampled in
        if pending and key not in study.user_attrs:
            study.set_user_attr(key, value)
    if pending and anchors:
        for k, params in enumerate(enqueue_order(anchor_params(knobs), seeds, n_trials)):
            study.enqueue_trial(params, skip_if_exists=True)
            if k == 0:
                stop_at("queue")
    fill_queue(study, n_trials)
    if pending:
        study.set_user_attr(QUEUE_ATTR, False)
    return study


def create_study(storage, study_name: str, seed: int, n_trials: int,
                 sampler: str = "tpe") -> optuna.Study:
    """The study (created empty, its queue marked pending, if it is not there yet)."""
    storage = open_storage(storage) if isinstance(storage, str) else storage
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    study = optuna.create_study(
        storage=storage, study_name=study_name, load_if_exists=True,
        sampler=make_sampler(seed, n_trials, sampler), directions=[d for _, d in OBJECTIVES])
    if study_name not in existing:
        study.set_user_attr(QUEUE_ATTR, True)
    return study


def enqueue_order(anchors: list[dict], seeds: Sequence[dict], n_trials: int) -> list[dict]:
    """Anchors (identity, most compressed, uniform w8a8 first) then sensitivity seeds, the
    remaining uniform anchors last; a third of the trials is always left to the sampler."""
    ordered = anchors[:2] + anchors[2:3] + list(seeds) + anchors[3:]
    unique = [a for i, a in enumerate(ordered) if a not in ordered[:i]]
    return unique[:max(1, n_trials - n_trials // 3)]


def mark_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a killed search go back to the queue with their parameters
    (search/storage.py); returns how many. Only those whose worker is gone: a live
    worker's trial on another machine, or in another process here, keeps running."""
    if is_heartbeat_enabled(study._storage):
        return fail_stale(study)
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason",
                                           "interrupted: the search process stopped mid-trial")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return len(stale)


def finished_count(study: optuna.Study) -> int:
    """Finished trials that were new work (a duplicate plan's trial is not)."""
    return sum(DUPLICATE_ATTR not in t.user_attrs
               for t in study.get_trials(deepcopy=False, states=FINISHED))


def duplicate_count(study: optuna.Study) -> int:
    return sum(DUPLICATE_ATTR in t.user_attrs for t in study.get_trials(deepcopy=False))


def run_trials(study: optuna.Study, knobs: Sequence[Knob], evaluate: Callable, budget: Budget,
               n_trials: int, timeout_s: float | None = None, trial_timeout_s: float | None = None,
               callbacks: Sequence[Callable] = (), multi_fidelity: bool = False,
               refine: Callable | None = None) -> None:
    """Run until the study holds ``n_trials`` finished trials (or ``timeout_s`` passes).
    ``multi_fidelity``: ``evaluate(plan, proxy=True)`` first, full evaluation only for
    promising proxies (search/fidelity.py). ``refine(plan, sampled) -> (plan, attrs)``: what a
    plan becomes before it is built (budget repair, coherence); the stored plan is
    the built one, the attrs say what was sampled."""
    cache = _metrics_cache(study)
    if finished_count(study) >= n_trials:
        return

    def enough(study_, trial_) -> None:   # the queue holds the rest; this ends a resumed run early
        if finished_count(study_) >= n_trials:
            study_.stop()

    def objective(trial: optuna.Trial):
        plan = suggest_plan(trial, knobs)
        if refine is not None:     # enqueued plans (anchors, seeds) are never repaired
            fixed = study._storage.get_trial_system_attrs(trial._trial_id).get("fixed_params")
            plan, notes = refine(plan, sampled=not fixed)
            for key, value in notes.items():
                trial.set_user_attr(key, value)
        trial.set_user_attr("plan", plan.to_dict())
        trial.set_user_attr("plan_digest", plan.digest())
        stop_at(f"trial-{trial.number}")
        tell(trial=trial.number)   # a crash from here on is this trial's (supervisor.py)
        crash_at(f"trial-{trial.number}")
        try:
            first, metrics = cache.get(plan.digest(), (None, None))
            if metrics is None:
                with time_limit(trial_timeout_s):
                    metrics = (_two_stage(trial, study, plan, evaluate, budget)
                               if multi_fidelity else evaluate(plan))
                cache[plan.digest()] = (trial.number, metrics)
            else:
                trial.set_user_attr("reused_from_cache", True)
                _count_as_duplicate(study, trial, first, n_trials)
        except Exception as err:
            reason = f"{type(err).__name__}: {err}".strip().splitlines()[0][:500]
            trial.set_user_attr("fail_reason", reason)
            trial.set_user_attr("traceback", traceback_text())
            raise
        finally:
            tell(trial=None)
        trial.set_user_attr(METRICS_ATTR, metrics.to_dict())
        for name, value in budget.violations(metrics).items():
            trial.set_constraint(name, value)
        return tuple(metrics.objective(name) for name, _ in OBJECTIVES)

    study.optimize(objective, n_trials=None, timeout=timeout_s, catch=(Exception,),
                   callbacks=[*callbacks, enough], gc_after_trial=False)


DUPLICATE_ATTR = "duplicate_of"
"""A trial whose plan an earlier trial already measured: its number. Answered from it,
not counted as one of the ``n_trials``; a blank trial joins the queue in its place (at
most ``n_trials`` times, so a space with few plans still ends)."""


def _count_as_duplicate(study, trial, first: int | None, n_trials: int) -> None:
    if first is None or first == trial.number:
        return
    trial.set_user_attr(DUPLICATE_ATTR, first)
    if duplicate_count(study) <= n_trials:
        study.enqueue_trial({})


def _two_stage(trial, study, plan, evaluate: Callable, budget: Budget):
    """Proxy first; the full evaluation only if the proxy is promising."""
    proxy = evaluate(plan, proxy=True)
    if proxy.fidelity != "proxy":
        return proxy            # nothing to scale: the proxy was the full evaluation
    promote, why = promising(proxy, study.get_trials(deepcopy=False), budget)
    trial.set_user_attr("promotion", {"promoted": promote, "reason": why,
                                      "proxy_seconds": proxy.timings_s.get("total")})
    if not promote:
        return proxy
    trial.set_user_attr(PROXY_QUALITY, proxy.quality)
    return evaluate(plan)


def _metrics_cache(study: optuna.Study) -> dict:
    """Plans already measured in this study: a repeated proposal reuses its numbers."""
    cache = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        metrics = metrics_of(trial)
        if metrics is not None and trial.user_attrs["plan_digest"] not in cache:
            cache[trial.user_attrs["plan_digest"]] = (trial.number, metrics)
    return cache


def traceback_text(limit: int = 4000) -> str:
    """The exception being handled, as a traceback of at most ``limit`` characters: where it
    is longer (a time limit that fires deep in a library), the innermost frames are kept
    under the ``Traceback`` header line, so the text still reads as one."""
    text = traceback.format_exc()
    if len(text) <= limit:
        return text
    head, _, frames = text.partition("\n")
    gap = "\n  ...\n"
    return head + gap + frames[len(frames) - (limit - len(head) - len(gap)):]


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
