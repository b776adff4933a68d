"""Several processes on one search: ``--workers N`` here, ``autocompress worker`` elsewhere.

The search that creates a study publishes its config and resolved device profile in the
study's user attrs, so a worker on another machine needs only the storage URL and the
study name (a user's ``--profile`` file need not exist there). Every process drains the
same fixed trial queue (search/queue.py); the search writes pareto.json only once no trial
is queued or running. Local workers split the cores: each gets ``cores // N`` ONNX Runtime
and torch threads, and every trial records which process measured it with how many threads.

A local worker ends with its search (``PARENT_ENV``: a parent-death signal, and a poll
of the parent pid where the kernel has none): a killed search leaves no process draining
its queue, the trials those workers held go back to the queue, and ``--resume`` finishes.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from .crash_note import PARENT_ENV
from .backends.ort_runner import TimingConfig
from .search.queue import wait_finished
from .search.storage import JOURNAL

CONFIG_ATTR = "autocompress:config"
PROFILE_ATTR = "autocompress:profile"
STORAGE_ENV = "AUTOCOMPRESS_STORAGE"   # how a local worker gets the URL (not on its argv)
RUN_TOKEN = "{run}"                     # config.json: the run folder, wherever it is now
log = logging.getLogger("autocompress.workers")


def default_storage(workers: int) -> str:
    """SQLite for one process; a journal file (safe for several writers) for more; in the
    run folder (``RUN_TOKEN``), so a moved or copied folder resumes its own study."""
    if workers > 1:
        return f"{JOURNAL}{RUN_TOKEN}/study.journal"
    return f"sqlite:///{RUN_TOKEN}/study.db"


def resolve_storage(url: str, run_dir: Path) -> str:
    """The URL with ``RUN_TOKEN`` replaced by the run folder's absolute path."""
    return url.replace(RUN_TOKEN, str(Path(run_dir).resolve()))


def storage_file(url: str) -> Path | None:
    """The local file behind a SQLite or journal URL (None: a server)."""
    for scheme in (JOURNAL, "sqlite:///"):
        if url.startswith(scheme):
            return Path(url[len(scheme):])
    return None


def check(workers: int, storage: str | None) -> None:
    """Refuse what cannot work, before anything is written."""
    from .run_config import RunError

    if workers < 1:
        raise RunError("--workers must be at least 1")
    if workers > 1 and storage and storage.startswith("sqlite"):
        raise RunError("SQLite cannot be shared safely by several worker processes; leave "
                       "--storage out (a journal file in the run folder) or use a server URL")


def threads_per_worker(workers: int) -> int:
    """ONNX Runtime / torch threads for each of ``workers`` processes on this machine."""
    return max(1, min(TimingConfig().threads, (os.cpu_count() or 1) // workers))


def publish(study, config, profile) -> None:
    """What a worker elsewhere needs: the config and the resolved profile."""
    study.set_user_attr(CONFIG_ATTR, config.to_dict())
    study.set_user_attr(PROFILE_ATTR, profile.to_dict())


def identity(threads: int) -> dict:
    """Stored on each trial: who measured it (host latency depends on it)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "threads": threads}


def summary(config, trials) -> dict:
    """pareto.json's account of who ran the trials and under what load."""
    by_process = {}
    for t in trials:
        who = t.user_attrs.get("worker")
        if who:
            key = (who["host"], who["pid"])
            by_process.setdefault(key, {**who, "trials": 0})["trials"] += 1
    return {"local_workers": config.workers, "threads_per_worker": threads_per_worker(config.workers),
            "note": f"host latency measured with {config.workers} concurrent worker process(es) "
                    "on the search machine; each trial's 'worker' says which process measured it",
            "processes": sorted(by_process.values(), key=lambda p: (p["host"], p["pid"]))}


@contextmanager
def limited_threads(evaluator, threads: int):
    """This process measures and trains with ``threads`` threads, restored afterwards."""
    import torch

    before, timing = torch.get_num_threads(), evaluator.timing
    torch.set_num_threads(threads)
    evaluator.timing = replace(timing, threads=threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        evaluator.timing = timing


def run_here(study, config, knobs, evaluator, callbacks, run_dir: Path, work_on) -> None:
    """The search process's part: start N-1 local workers, work alongside them (``work_on``:
    api's trial loop), then wait until every trial (theirs and any remote worker's) is
    finished."""
    from optuna.trial import TrialState

    threads = threads_per_worker(config.workers)
    workers = [_spawn(config.storage, config.study, k, config.seed, threads, run_dir)
               for k in range(1, config.workers)]
    try:
        while True:   # a trial requeued while waiting (its worker died) is run here
            with limited_threads(evaluator, threads):
                work_on(study, config, knobs, evaluator, callbacks)
            wait_finished(study, still_working=lambda: any(p.poll() is None for p, _ in workers))
            if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                break
        for proc, path in workers:
            if proc.poll() not in (None, 0):
                log.warning("local worker pid %d exited with %d (log: %s)",
                            proc.pid, proc.returncode, path)
    finally:   # done (nothing queued or running: a worker still starting has nothing to do)
               # or interrupted: either way no local worker outlives the search
        for proc, _ in workers:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()


def _spawn(storage: str, study: str, k: int, seed: int, threads: int, run_dir: Path):
    """One ``autocompress worker`` process; the URL goes by environment, not argv (``ps``)."""
    path = run_dir / "workers" / f"worker-{k}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    paths = [os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths),
               **{STORAGE_ENV: storage, PARENT_ENV: str(os.getpid())})
    with open(path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autocompress.cli", "worker", "--study", study,
             "--threads", str(threads), "--seed", str(seed)],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, path
