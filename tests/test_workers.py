"""Several worker processes on one study: a real PostgreSQL server and the local journal.

Guarantees checked on real processes: exactly ``trials`` trials, each run once by one
process (anchors included), nothing left RUNNING or queued, a live worker's trial never
marked interrupted, a killed worker's trial failed with the reason, pareto.json complete.
The search process is paused (SIGSTOP) mid-trial so the workers, which take seconds to
start, really share the queue with it; a pause shorter than the heartbeat grace period
is exactly what a live but slow worker looks like.
"""
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autocompress.cli import main
from autocompress.search import storage as st
from autocompress.search.queue import QueueDrained, QueuedStudy, fill
from autocompress.search.study import mark_interrupted
from autocompress.workers import threads_per_worker
from tests.postgres import Running, bindir
from tests.processes import until

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests.tiny_workload:make_workload"
CLI = [sys.executable, "-m", "autocompress.cli"]
DEADLINE_S = 120


@pytest.fixture(scope="module")
def postgres():
    binaries = bindir()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found via pg_config or "
                    "/usr/lib/postgresql/*/bin; scripts/system-packages.sh installs them")
    with Running(binaries) as server:
        yield server


GRACE_S = 300   # the pause below must stay shorter, however loaded the machine


@pytest.fixture
def patient(monkeypatch):
    """Every process here (this one included) gives a silent worker GRACE_S."""
    monkeypatch.setattr(st, "GRACE_S", GRACE_S)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """This module's artifact cache: the first search really builds every candidate."""
    return tmp_path_factory.mktemp("cache")


def _start(args, tmp_path, name, cache: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1",
               AUTOCOMPRESS_CACHE=str(cache), AUTOCOMPRESS_HEARTBEAT_GRACE_S=str(GRACE_S),
               AUTOCOMPRESS_UNSUPERVISED="1")   # the pids signalled here do the work
    with open(tmp_path / f"{name}.log", "wb") as out:
        return subprocess.Popen(CLI + args, cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _open(url: str):
    try:
        study = st.load_study(url, "autocompress")
    except (st.StorageError, KeyError, ValueError):   # not created yet, or mid-write
        return None
    return study if "autocompress:config" in study.user_attrs else None


def _pid(trial) -> int | None:
    return trial.user_attrs.get("worker", {}).get("pid")


def _running_of(study, pid: int) -> list:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if _pid(t) == pid]


def _finished_by(study, pid: int) -> list:
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and _pid(t) == pid]


def _pause_mid_trial(study, pid: int, lock: Path | None = None, ready=lambda: True) -> int:
    """SIGSTOP ``pid`` while it holds a RUNNING trial (and not the journal's write lock,
    which others would wait 30 s to break); that trial's number."""
    def paused():
        if ready() and _running_of(study, pid):
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.05)
            held = _running_of(study, pid)
            if held and not (lock and _locked(lock)):
                return held[0].number + 1   # (+1: trial 0 is a number, not falsy)
            os.kill(pid, signal.SIGCONT)
        return None
    return until(paused, f"pid {pid} to hold a running trial") - 1


def _locked(lock: Path) -> bool:
    """Whether someone holds the journal's flock (search/storage.FlockLock)."""
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _each_finishes_one(study, pids) -> None:
    """Pause each process mid-trial once it has finished a trial, until every one has one:
    the quickest to start cannot drain the queue alone."""
    paused = set()

    def done():
        for pid in set(pids) - paused:
            if len(paused) < len(pids) - 1 and _finished_by(study, pid) and \
                    _running_of(study, pid):
                os.kill(pid, signal.SIGSTOP)
                time.sleep(0.05)
                if _running_of(study, pid):
                    paused.add(pid)
                else:
                    os.kill(pid, signal.SIGCONT)
        return all(_finished_by(study, pid) for pid in pids)
    try:
        until(done, f"each of {sorted(pids)} to finish a trial")
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)


def _cleanup(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()


def _assert_exact_queue(study, n_trials: int, interrupted=()) -> list:
    """Exactly ``n_trials`` trials, numbered 0..n-1, all finished; the enqueued plans
    (anchors, sensitivity seeds) first, each run once as enqueued."""
    from autocompress.api import discover_knobs
    from autocompress.search.space import anchor_params
    from autocompress.workloads import load_workload

    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(n_trials))
    assert all(t.state.is_finished() for t in trials), [t.state for t in trials]
    anchors = anchor_params(discover_knobs(load_workload(TINY)))
    enqueued = [t for t in sorted(trials, key=lambda t: t.number) if t.system_attrs["fixed_params"]]
    plans = [t.system_attrs["fixed_params"] for t in enqueued]
    assert [t.number for t in enqueued] == list(range(len(enqueued)))
    assert all(plans.count(p) == 1 for p in plans) and plans[:2] == anchors[:2]
    for t in enqueued:
        if t.number not in interrupted:
            assert t.state == TrialState.COMPLETE and t.params == t.system_attrs["fixed_params"]
    return trials


def _worker_trials(log: Path) -> set[int]:
    """The trial numbers an ``autocompress worker`` says it ran."""
    return {int(n) for n in re.findall(r"^trial (\d+): ", log.read_text(), re.M)}


def test_search_and_two_workers_share_a_postgres_study(postgres, tmp_path, patient, cache):
    url, n_trials = postgres.create_database(), 12
    search = _start(["search", "--model", TINY, "--target", "host", "--trials", str(n_trials),
                     "--storage", url, "--out", str(tmp_path / "run")], tmp_path, "search", cache)
    procs = [search]
    try:
        study = until(lambda: _open(url), "the search to create its study")
        held = _pause_mid_trial(study, search.pid)
        # what a resumed search does first: the paused (live) process's trial stays running
        assert mark_interrupted(study) == 0
        assert study.trials[held].state == TrialState.RUNNING
        workers = [_start(["worker", "--storage", url, "--study", "autocompress", "--threads",
                           "1"], tmp_path, f"worker{k}", cache) for k in (1, 2)]
        procs += workers
        _each_finishes_one(study, [w.pid for w in workers])
        assert mark_interrupted(study) == 0
        os.kill(search.pid, signal.SIGCONT)
        for proc in procs:
            assert proc.wait(timeout=DEADLINE_S) == 0, (tmp_path / "search.log").read_text()[-3000:]
    finally:
        _cleanup(procs)

    study = st.load_study(url, "autocompress")
    trials = _assert_exact_queue(study, n_trials)
    assert all(t.state == TrialState.COMPLETE for t in trials), "nothing failed or interrupted"
    ran = {p.pid: {t.number for t in trials if _pid(t) == p.pid} for p in procs}
    assert all(ran.values()), f"every process ran trials: {ran}"
    assert sum(map(len, ran.values())) == n_trials
    assert held in ran[search.pid]
    for k, worker in enumerate(workers, 1):   # what each worker printed matches the record
        assert _worker_trials(tmp_path / f"worker{k}.log") == ran[worker.pid]

    document = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert document["study"]["storage"] == url
    assert (document["study"]["n_trials"], document["study"]["n_complete"]) == (n_trials, n_trials)
    processes = document["study"]["workers"]["processes"]
    assert {p["pid"]: p["trials"] for p in processes} == {pid: len(n) for pid, n in ran.items()}
    assert document["front"]
    for p in document["front"]:
        assert (tmp_path / "run" / p["artifact"]).stat().st_size == p["size_bytes"]


def test_local_workers_share_a_journal_and_a_killed_workers_trial_runs_again(
        tmp_path, patient, cache):
    n_trials, run = 10, tmp_path / "run"
    search = _start(["search", "--model", TINY, "--target", "host", "--trials", str(n_trials),
                     "--workers", "2", "--out", str(run)], tmp_path, "search", cache)
    procs = [search]
    url, lock = st.journal_url(run / "study.journal"), run / "study.journal.flock"
    try:
        study = until(lambda: _open(url), "the search to create its study")
        _pause_mid_trial(study, search.pid, lock)
        child = until(lambda: next((_pid(t) for t in study.get_trials(deepcopy=False)
                                     if _pid(t) not in (None, search.pid)), None),
                       "the local worker to take a trial")
        killed = _pause_mid_trial(study, child, lock, ready=lambda: _finished_by(study, child))
        os.kill(child, signal.SIGKILL)
        os.kill(search.pid, signal.SIGCONT)
        assert search.wait(timeout=DEADLINE_S) == 0, (tmp_path / "search.log").read_text()[-3000:]
    finally:
        _cleanup(procs)

    study = st.load_study(url, "autocompress")
    trials = _assert_exact_queue(study, n_trials)
    assert all(t.state == TrialState.COMPLETE for t in trials), "the killed trial ran again"
    reasons = trials[killed].user_attrs[st.INTERRUPTIONS_ATTR]
    assert len(reasons) == 1 and re.fullmatch(
        rf"interrupted: its worker process \(pid {child} on .+\) is gone", reasons[0])
    assert _pid(trials[killed]) == search.pid
    assert not any(p.name.endswith(".rename") for p in run.iterdir()), "no lock leftovers"
    threads = threads_per_worker(2)
    assert {_pid(t) for t in trials} == {search.pid, child}
    assert all(t.user_attrs["worker"]["threads"] == threads for t in trials)

    document = json.loads((run / "pareto.json").read_text())
    assert document["config"]["workers"] == 2
    assert document["study"]["storage"] == url and (run / "study.journal").is_file()
    assert (document["study"]["n_trials"], document["study"]["n_failed"]) == (n_trials, 0)
    workers = document["study"]["workers"]
    assert workers["local_workers"] == 2 and workers["threads_per_worker"] == threads
    assert "2 concurrent worker process(es)" in workers["note"]
    assert sum(p["trials"] for p in workers["processes"]) == n_trials
    assert document["front"]
    assert "worker pid" in (run / "workers" / "worker-1.log").read_text()


def _running_trial(url: str):
    """A study with two queued trials, one taken by this process (RUNNING, heartbeat sent)."""
    study = optuna.create_study(storage=st.open_storage(url), directions=["maximize"])
    assert fill(study, 2) == 2 and fill(study, 2) == 0
    trial = QueuedStudy(study).ask()
    study._storage.record_heartbeat(trial._trial_id)
    return study, trial


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")   # ask() outside optimize, on purpose
@pytest.mark.parametrize("kind", ["journal", "postgres"])
def test_stale_means_gone_or_silent_never_merely_running(kind, tmp_path, request):
    url = st.journal_url(tmp_path / "s.journal") if kind == "journal" else \
        request.getfixturevalue("postgres").create_database()
    study, trial = _running_trial(url)
    storage, tid = study._storage, trial._trial_id
    assert study.trials[trial.number].system_attrs[st.WORKER_ATTR]["pid"] == os.getpid()
    assert mark_interrupted(study) == 0, "this live process's trial is not stale"

    other = {"machine": "elsewhere/boot", "host": "elsewhere", "pid": os.getpid()}
    storage.set_trial_system_attr(tid, st.WORKER_ATTR, other)
    assert mark_interrupted(study) == 0, "another machine's worker with a fresh heartbeat"
    if kind == "journal":
        storage.set_trial_system_attr(tid, st.BEAT_ATTR, time.time() - st.GRACE_S - 5)
    else:
        import psycopg2

        db = psycopg2.connect(url)
        with db, db.cursor() as cursor:
            cursor.execute("UPDATE trial_heartbeats SET heartbeat = heartbeat - "
                           "interval '1 hour' WHERE trial_id = %s", (tid,))
        db.close()
    assert mark_interrupted(study) == 1
    silent = (f"interrupted: no heartbeat from its worker (pid {os.getpid()} on elsewhere) "
              f"for over {st.GRACE_S} s")
    requeued = study.trials[trial.number]
    assert requeued.state == TrialState.WAITING, "a stale trial goes back to the queue"
    assert requeued.user_attrs[st.INTERRUPTIONS_ATTR] == [silent]

    gone = subprocess.Popen(["sleep", "30"])
    gone.kill()
    gone.wait()
    dead = f"interrupted: its worker process (pid {gone.pid} on here) is gone"
    for attempt in range(2, st.MAX_INTERRUPTIONS + 1):
        again = QueuedStudy(study).ask()
        assert again.number == trial.number, "a requeued trial runs before later ones"
        assert mark_interrupted(study) == 0, "just taken again: its old beat does not count"
        storage.set_trial_system_attr(again._trial_id, st.WORKER_ATTR,
                                      {"machine": st.MACHINE, "host": "here", "pid": gone.pid})
        assert mark_interrupted(study) == 1
        frozen = study.trials[trial.number]
        assert frozen.user_attrs[st.INTERRUPTIONS_ATTR] == [silent] + [dead] * (attempt - 1)
    assert frozen.state == TrialState.FAIL, "a trial that keeps killing its worker is failed"
    assert frozen.user_attrs["fail_reason"] == f"{dead} ({st.MAX_INTERRUPTIONS} times: not run again)"
    second = QueuedStudy(study).ask()
    assert second.number == trial.number + 1
    with pytest.raises(QueueDrained):
        QueuedStudy(study).ask()
    assert len(study.trials) == 2, "a drained queue never grows"


def test_worker_errors_are_one_line(postgres, tmp_path, capsys):
    closed = f"postgresql://nobody:secret@127.0.0.1:{postgres.port + 1}/x"
    assert main(["worker", "--storage", closed]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autocompress: error: cannot open the study storage "
                          f"postgresql://nobody:***@127.0.0.1:{postgres.port + 1}/x: ")
    assert "\n" not in err and "secret" not in err

    url = postgres.create_database()
    optuna.create_study(storage=st.open_storage(url), study_name="someone-else")
    assert main(["worker", "--storage", url, "--study", "nope"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"autocompress: error: no study named 'nope' in {url} (studies there: someone-else)")
    assert main(["worker", "--storage", url, "--study", "someone-else"]) == 2
    assert "was not created by `autocompress search`" in capsys.readouterr().err

    assert main(["worker", "--storage", st.journal_url(tmp_path / "none.journal")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["search", "--model", TINY, "--workers", "2", "--out", str(tmp_path / "r"),
                 "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert "SQLite cannot be shared" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
