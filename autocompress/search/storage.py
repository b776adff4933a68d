"""Study storages that several worker processes share, each trial with a heartbeat.

URLs: ``journal:///PATH`` is Optuna's JournalStorage on a local append-only file (safe for
several processes on one machine); anything else (``sqlite:///``, ``postgresql://``, ...)
is Optuna's RDBStorage. SQLite suits one process; several machines need a server.

Why heartbeats: a resumed search (and every worker, before each trial) fails the RUNNING
trials whose worker is gone, and only those. A worker writes who it is (machine, pid) and
a heartbeat every ``HEARTBEAT_S`` through Optuna's own heartbeat thread. A trial is stale
when its pid is dead on this machine, or when no heartbeat came for ``GRACE_S`` (the
server's clock for RDB storages, this machine's for the local journal file; longer with
``$AUTOCOMPRESS_HEARTBEAT_GRACE_S`` where workers may stall, e.g. swapping). Optuna's
``fail_stale_trials`` then marks it FAIL with the reason in ``fail_reason``.
"""
from __future__ import annotations

import os
import socket
import time
import warnings
from datetime import datetime
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

JOURNAL = "journal:///"
HEARTBEAT_S = 5
GRACE_S = int(os.environ.get("AUTOCOMPRESS_HEARTBEAT_GRACE_S", 30))   # every process: same value
WORKER_ATTR = "autocompress:worker"          # trial system attr: who runs it
BEAT_ATTR = "autocompress:heartbeat"         # journal only: unix time of the last beat


class StorageError(ValueError):
    """A storage URL that cannot be opened, or a study that is not there; one line."""


def journal_url(path: Path | str) -> str:
    return f"{JOURNAL}{Path(path).resolve()}"


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    if url.startswith(JOURNAL):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:   # noqa: BLE001 - an unparsable URL has nothing to hide by structure
        return url.split("@")[-1]


def open_storage(url: str, must_exist: bool = False) -> optuna.storages.BaseStorage:
    """The storage behind ``url``, with heartbeats on. ``must_exist``: a worker joining a
    study refuses to create an empty SQLite or journal file where it expected one."""
    if url.startswith(JOURNAL) or url.startswith("sqlite:///"):
        path = Path(url[len(JOURNAL if url.startswith(JOURNAL) else "sqlite:///"):])
        if must_exist and not path.is_file():
            raise StorageError(f"cannot open the study storage {url}: no such file {path}")
        if url.startswith(JOURNAL):
            return HeartbeatJournalStorage(JournalFileBackend(str(path)))
    engine = {"connect_args": {"connect_timeout": 10}} if url.startswith("postgres") else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return HeartbeatRDBStorage(_with_driver(url), engine_kwargs=engine,
                                       heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    except Exception as err:   # noqa: BLE001 - drivers raise their own types; one line for all
        line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise StorageError(f"cannot open the study storage {redact(url)}: {line}") from None


def _with_driver(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; we install psycopg2."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    try:
        import psycopg  # noqa: F401
        return f"postgresql://{rest}"
    except ImportError:
        return f"postgresql+psycopg2://{rest}"


def load_study(url: str, name: str, sampler=None) -> optuna.Study:
    """An existing study, or a one-line error naming the studies that are there."""
    storage = open_storage(url, must_exist=True)
    names = sorted(s.study_name for s in storage.get_all_studies())
    if name not in names:
        there = ", ".join(names) if names else "none"
        raise StorageError(f"no study named {name!r} in {redact(url)} (studies there: {there})")
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler)


def fail_stale(study: optuna.Study) -> int:
    """Fail the RUNNING trials whose worker is gone (see module doc); returns how many."""
    if not is_heartbeat_enabled(study._storage):
        return 0
    running = [t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    after = [study._storage.get_trial(i) for i in running]
    return sum(t.state == TrialState.FAIL and
               t.user_attrs.get("fail_reason", "").startswith("interrupted") for t in after)


def announce(storage, trial_id: int) -> None:
    """Say at once that this process runs ``trial_id`` (its heartbeat would say it a moment
    later; a worker killed in between would leave a trial only the grace period can free)."""
    backend = getattr(storage, "_backend", storage)   # Optuna wraps RDB storages in a cache
    if isinstance(backend, _Liveness):
        backend._announce(trial_id)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


MACHINE = f"{socket.gethostname()}/{_boot_id()}"   # a pid means something only here


def _pid_alive(pid: int) -> bool:
    """A zombie (killed, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:][:1] != "Z"


def why_stale(trial: FrozenTrial, beat_age_s: float | None) -> str | None:
    """Why ``trial``'s worker counts as gone, or None while it may still be working.
    ``beat_age_s``: seconds since its last heartbeat (None: it never sent one)."""
    who = trial.system_attrs.get(WORKER_ATTR)
    name = f"pid {who['pid']} on {who['host']}" if who else "unknown worker"
    if who and who["machine"] == MACHINE and not _pid_alive(who["pid"]):
        return f"interrupted: its worker process ({name}) is gone"
    if beat_age_s is None and trial.datetime_start is not None:
        beat_age_s = (datetime.now() - trial.datetime_start).total_seconds()
    if beat_age_s is not None and beat_age_s > GRACE_S:
        return f"interrupted: no heartbeat from its worker ({name}) for over {GRACE_S} s"
    return None


class _Liveness:
    """What both storages add: say who runs a trial, and label stale trials before Optuna
    fails them (a finished trial's attributes can no longer be written)."""

    def _announce(self, trial_id: int) -> None:
        announced = self.__dict__.setdefault("_announced", set())
        if trial_id not in announced:
            self.set_trial_system_attr(trial_id, WORKER_ATTR, {
                "machine": MACHINE, "host": socket.gethostname(), "pid": os.getpid()})
            announced.add(trial_id)

    def _labelled(self, trial: FrozenTrial, reason: str | None) -> bool:
        if reason is None:
            return False
        try:
            self.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        except UpdateFinishedTrialError:   # it finished meanwhile: not stale after all
            return False
        return True

    def _running(self, study_id: int) -> list[FrozenTrial]:
        return self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))


class HeartbeatRDBStorage(_Liveness, RDBStorage):
    """RDBStorage whose heartbeat also names the worker (stale: see :func:`why_stale`)."""

    def record_heartbeat(self, trial_id: int) -> None:
        super().record_heartbeat(trial_id)   # first: a named trial always has a beat
        self._announce(trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        old = set(super()._get_stale_trial_ids(study_id))   # by the server's clock
        stale = []
        for trial in self._running(study_id):
            beat_age = GRACE_S + 1.0 if trial._trial_id in old else \
                (0.0 if WORKER_ATTR in trial.system_attrs else None)
            if self._labelled(trial, why_stale(trial, beat_age)):
                stale.append(trial._trial_id)
        return stale


class HeartbeatJournalStorage(_Liveness, JournalStorage, BaseHeartbeat):
    """JournalStorage with Optuna's heartbeat protocol (which Optuna gives RDB storages
    only): each beat is a system attr holding this machine's time."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self._announce(trial_id)
            self.set_trial_system_attr(trial_id, BEAT_ATTR, time.time())
        except UpdateFinishedTrialError:   # failed as stale by another process meanwhile
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = []
        for trial in self._running(study_id):
            beat = trial.system_attrs.get(BEAT_ATTR)
            reason = why_stale(trial, None if beat is None else time.time() - beat)
            if self._labelled(trial, reason):
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int:
        return HEARTBEAT_S

    def get_heartbeat_stale_trial_callback(self):
        return None
