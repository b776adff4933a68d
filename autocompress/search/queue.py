"""A study's trials as one fixed queue that any number of worker processes drain.

The search that creates (or resumes) a study enqueues exactly ``n_trials`` trials: the
anchor plans, then blank ones that the sampler fills in when a worker takes them. A worker
only takes queued trials and never creates one. Taking is Optuna's WAITING -> RUNNING swap,
which every storage makes atomic (a row lock in RDB storages, log order in the journal),
so each trial runs once and the study ends with exactly ``n_trials`` trials of new work.
A trial whose plan was already measured is answered from the first one and adds one blank
trial to the queue (search/study.py), so duplicates never use up the search.
"""
from __future__ import annotations

import time
from typing import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from .storage import announce, fail_stale


class QueueDrained(Exception):
    """No queued trial is left for this worker."""


def fill(study: optuna.Study, n_trials: int) -> int:
    """Enqueue blank trials until the study holds ``n_trials`` plus one per duplicate plan
    (search/study.py ``DUPLICATE_ATTR``); returns how many were added."""
    trials = study.get_trials(deepcopy=False)
    duplicates = min(n_trials, sum("duplicate_of" in t.user_attrs for t in trials))
    missing = max(0, n_trials + duplicates - len(trials))
    for _ in range(missing):
        study.enqueue_trial({})
    return missing


class QueuedStudy(optuna.Study):
    """The same study, seen by one worker: :meth:`ask` takes a queued trial or raises
    :class:`QueueDrained` (``Study.ask`` would create a new trial instead)."""

    def __init__(self, study: optuna.Study, trial_attrs: dict | None = None):
        super().__init__(study.study_name, study._storage, study.sampler, study.pruner)
        self.trial_attrs = dict(trial_attrs or {})

    def ask(self, fixed_distributions=None) -> optuna.Trial:
        self._thread_local.cached_all_trials = None   # as Study.ask: sample from fresh trials
        trial_id = self._pop_waiting_trial_id()
        if trial_id is None:
            raise QueueDrained(f"study {self.study_name!r} has no queued trial left")
        announce(self._storage, trial_id)
        trial = optuna.Trial(self, trial_id)
        for name, distribution in (fixed_distributions or {}).items():
            trial._suggest(name, distribution)
        for key, value in self.trial_attrs.items():
            trial.set_user_attr(key, value)
        return trial


def drain(study: optuna.Study, run: Callable[[optuna.Study], None],
          trial_attrs: dict | None = None) -> None:
    """Call ``run(queued_study)`` (it runs trials, e.g. ``study.optimize``) until the queue
    is empty or ``run`` returns (its own trial count or timeout)."""
    queued = QueuedStudy(study, trial_attrs)
    while True:
        try:
            run(queued)
            return
        except QueueDrained:
            return
        except UpdateFinishedTrialError:   # ours was failed as stale meanwhile: go on
            continue


def wait_finished(study: optuna.Study, poll_s: float = 1.0,
                  still_working: Callable[[], bool] = lambda: False) -> None:
    """Return once no trial is RUNNING (or WAITING while ``still_working()``); trials whose
    worker is gone are failed on the way (search/storage.py)."""
    while True:
        fail_stale(study)
        states = {t.state for t in study.get_trials(deepcopy=False)}
        if TrialState.RUNNING not in states and not (
                TrialState.WAITING in states and still_working()):
            return
        time.sleep(poll_s)
