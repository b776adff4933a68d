"""Study storages that several worker processes share, each trial with a heartbeat.

URLs: ``journal:///PATH`` is Optuna's JournalStorage on a local append-only file (safe for
several processes on one machine); anything else (``sqlite:///``, ``postgresql://``, ...)
is Optuna's RDBStorage. SQLite suits one process; several machines need a server.

Why heartbeats: a resumed search (and every worker, before each trial) fails the RUNNING
trials whose worker is gone, and only those. A worker writes who it is (machine, pid) and
a heartbeat every ``HEARTBEAT_S`` through Optuna's own heartbeat thread. A trial is stale
when its pid is dead on this machine, or when no heartbeat came for ``GRACE_S`` (the
server's clock for RDB storages, this machine's for the local journal file; longer with
``$AUTOCOMPRESS_HEARTBEAT_GRACE_S`` where workers may stall, e.g. swapping).

A stale trial goes back to the queue (WAITING, its sampled parameters kept, the reason
appended to its ``interruptions`` user attr), so a kill never costs an anchor, a seed or
the baseline, and the rerun samples nothing new, however often the search is killed. A
candidate that kills its own process is told apart by the process's supervising parent
(autocompress/supervisor.py), which appends the signal to the trial's ``crashes`` user
attr: a trial with ``MAX_CRASHES`` crashes is failed, by Optuna's ``fail_stale_trials``,
with the reason in ``fail_reason``. A process nobody supervised (``api.search`` called
from Python) leaves no such evidence; its trial is failed at its ``MAX_INTERRUPTIONS``th
interruption instead.

The journal file is locked with ``flock`` (:class:`FlockLock`), which the kernel releases
when its holder dies: a killed process leaves neither a stale lock nor a ``.rename`` link.
"""
from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import BaseJournalFileLock
from optuna.trial import FrozenTrial, TrialState

from ..crash_note import supervised

JOURNAL = "journal:///"
HEARTBEAT_S = 5
GRACE_S = int(os.environ.get("AUTOCOMPRESS_HEARTBEAT_GRACE_S", 30))   # every process: same value
WORKER_ATTR = "autocompress:worker"          # trial system attr: who runs it
BEAT_ATTR = "autocompress:heartbeat"         # journal only: unix time of the last beat
INTERRUPTIONS_ATTR = "interruptions"         # trial user attr: why earlier attempts stopped
CRASHES_ATTR = "crashes"                     # trial user attr: signals it crashed its process with
MAX_CRASHES = 2                              # the 2nd crash of one trial fails it
MAX_INTERRUPTIONS = 4                        # unsupervised processes: the 4th interruption fails it


class StorageError(ValueError):
    """A storage URL that cannot be opened, or a study that is not there; one line."""


def journal_url(path: Path | str) -> str:
    return f"{JOURNAL}{Path(path).resolve()}"


def record_crash(url: str, study_name: str, number: int, signal_name: str) -> int:
    """The supervisor's record that trial ``number`` crashed its process; the crash count."""
    study = load_study(url, study_name)
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    crashes = [*trial.user_attrs.get(CRASHES_ATTR, []), signal_name]
    study._storage.set_trial_user_attr(trial._trial_id, CRASHES_ATTR, crashes)
    return len(crashes)


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
            return HeartbeatJournalStorage(JournalFileBackend(
                str(path), lock_obj=FlockLock(f"{path}.flock")))
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
    """Requeue (or, interrupted too often, fail) the RUNNING trials whose worker is gone
    (see module doc); returns how many."""
    if not is_heartbeat_enabled(study._storage):
        return 0
    running = [t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    after = [study._storage.get_trial(i) for i in running]
    return sum(t.state == TrialState.WAITING or (t.state == TrialState.FAIL and (
        t.user_attrs.get("fail_reason", "").startswith("interrupted")
        or CRASHES_ATTR in t.user_attrs)) for t in after)


def announce(storage, trial_id: int) -> None:
    """Say at once that this process runs ``trial_id`` and send a first beat (Optuna's
    heartbeat thread would a moment later; a worker killed in between would leave a trial
    only the grace period can free, and a requeued trial still holds its last run's beat)."""
    backend = getattr(storage, "_backend", storage)   # Optuna wraps RDB storages in a cache
    if isinstance(backend, _Liveness):
        backend._announce(trial_id, force=True)
        backend.record_heartbeat(trial_id)


class FlockLock(BaseJournalFileLock):
    """The journal's write lock as ``flock`` on a lock file: released by the kernel when
    its holder dies (Optuna's symlink lock stays behind a killed process for its grace
    period and can leave a ``.rename`` link). Local file systems only, like the journal."""

    def __init__(self, path: str):
        self._path = path
        self._local = threading.local()   # one open file per thread: flock excludes them too

    def acquire(self) -> bool:
        handle = open(self._path, "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        self._local.handle = handle
        return True

    def release(self) -> None:
        handle = self._local.__dict__.pop("handle", None)
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


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

    def _announce(self, trial_id: int, force: bool = False) -> None:
        announced = self.__dict__.setdefault("_announced", set())
        if force or trial_id not in announced:
            self.set_trial_system_attr(trial_id, WORKER_ATTR, {
                "machine": MACHINE, "host": socket.gethostname(), "pid": os.getpid(),
                "supervised": bool(supervised())})
            announced.add(trial_id)

    def _to_fail(self, trial: FrozenTrial, reason: str | None) -> bool:
        """Whether Optuna should fail this RUNNING trial now. A stale one is requeued
        instead (module doc) unless it was interrupted ``MAX_INTERRUPTIONS`` times."""
        if reason is None:
            return False
        past = list(trial.user_attrs.get(INTERRUPTIONS_ATTR, []))
        crashes = list(trial.user_attrs.get(CRASHES_ATTR, []))
        who = trial.system_attrs.get(WORKER_ATTR) or {}
        try:
            self.set_trial_user_attr(trial._trial_id, INTERRUPTIONS_ATTR, [*past, reason])
            if len(crashes) >= MAX_CRASHES:
                self.set_trial_user_attr(trial._trial_id, "fail_reason", (
                    f"the candidate crashed its process {len(crashes)} times "
                    f"({', '.join(crashes)}): not run again"))
                return True
            if not who.get("supervised") and len(past) + 1 >= MAX_INTERRUPTIONS:
                self.set_trial_user_attr(trial._trial_id, "fail_reason",
                                         f"{reason} ({len(past) + 1} times: not run again)")
                return True
            self.set_trial_system_attr(trial._trial_id, WORKER_ATTR, None)   # next run: another's
            self._forget_beat(trial._trial_id)
            self.set_trial_state_values(trial._trial_id, TrialState.WAITING)
        except UpdateFinishedTrialError:   # it finished meanwhile: not stale after all
            pass
        return False

    def _running(self, study_id: int) -> list[FrozenTrial]:
        return self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))


class HeartbeatRDBStorage(_Liveness, RDBStorage):
    """RDBStorage whose heartbeat also names the worker (stale: see :func:`why_stale`)."""

    def _forget_beat(self, trial_id: int) -> None:
        """A requeued trial's last beat must not make its next run look silent."""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(self.scoped_session, True) as session:
            session.query(models.TrialHeartbeatModel).filter_by(trial_id=trial_id).delete()

    def record_heartbeat(self, trial_id: int) -> None:
        super().record_heartbeat(trial_id)   # first: a named trial always has a beat
        self._announce(trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        old = set(super()._get_stale_trial_ids(study_id))   # by the server's clock
        stale = []
        for trial in self._running(study_id):
            beat_age = GRACE_S + 1.0 if trial._trial_id in old else \
                (0.0 if WORKER_ATTR in trial.system_attrs else None)
            if self._to_fail(trial, why_stale(trial, beat_age)):
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
            if self._to_fail(trial, reason):
                stale.append(trial._trial_id)
        return stale

    def _forget_beat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, BEAT_ATTR, None)

    def get_heartbeat_interval(self) -> int:
        return HEARTBEAT_S

    def get_heartbeat_stale_trial_callback(self):
        return None
