"""Several processes on one search: ``--workers N`` here, ``autocompress worker`` elsewhere.

The search that creates a study publishes its config and resolved device profile in the
study's user attrs, so a worker on another machine needs only the storage URL and the
study name (a user's ``--profile`` file need not exist there). Every process drains the
same fixed trial queue (search/queue.py); the search writes pareto.json only once no trial
is queued or running. Local workers split the cores: each gets ``cores // N`` ONNX Runtime
and torch threads, and every trial records which process measured it with how many threads.
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

from .backends.ort_runner import TimingConfig
from .search.queue import wait_finished
from .search.storage import StorageError, journal_url, load_study, redact

CONFIG_ATTR = "autocompress:config"
PROFILE_ATTR = "autocompress:profile"
STORAGE_ENV = "AUTOCOMPRESS_STORAGE"   # how a local worker gets the URL (not on its argv)
log = logging.getLogger("autocompress.workers")


def default_storage(run_dir: Path, workers: int) -> str:
    """SQLite for one process; a journal file (safe for several writers) for more."""
    if workers > 1:
        return journal_url(run_dir / "study.journal")
    return f"sqlite:///{(run_dir / 'study.db').resolve()}"


def check(workers: int, storage: str | None) -> None:
    """Refuse what cannot work, before anything is written."""
    from .api import RunError

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


def run_here(study, config, knobs, evaluator, callbacks, run_dir: Path) -> None:
    """The search process's part: start N-1 local workers, work alongside them, then wait
    until every trial (theirs and any remote worker's) is finished."""
    from .api import work_on

    threads = threads_per_worker(config.workers)
    workers = [_spawn(config.storage, config.study, k, config.seed + k, threads, run_dir)
               for k in range(1, config.workers)]
    try:
        with limited_threads(evaluator, threads):
            work_on(study, config, knobs, evaluator, callbacks)
        wait_finished(study, still_working=lambda: any(p.poll() is None for p, _ in workers))
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
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), **{STORAGE_ENV: storage})
    with open(path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autocompress.cli", "worker", "--study", study,
             "--threads", str(threads), "--seed", str(seed)],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, path


def join(storage: str, study_name: str, threads: int | None = None, seed: int | None = None,
         callbacks=()) -> int:
    """``autocompress worker``: run queued trials of a running study; returns how many."""
    import torch

    from . import api
    from .device_profiles import DeviceProfile
    from .search.study import make_sampler
    from .workloads import load_workload

    study = load_study(storage, study_name)
    attrs = study.user_attrs
    if CONFIG_ATTR not in attrs:
        raise StorageError(f"study {study_name!r} in {redact(storage)} was not created by "
                           "`autocompress search` (no config in its user attrs)")
    # the URL as this machine reaches the storage (the search may have said localhost)
    config = replace(api.SearchConfig.from_dict(attrs[CONFIG_ATTR]), storage=storage)
    profile = DeviceProfile.from_dict(attrs[PROFILE_ATTR], f"study {study_name!r} profile")
    study.sampler = make_sampler(seed, config.trials, config.sampler)
    threads = threads or threads_per_worker(1)
    torch.set_num_threads(threads)   # loading a workload may train a model
    workload = load_workload(config.model)
    knobs = api.search_space(config, workload)[0]   # as the search shaped it (stored analysis)
    evaluator = api.make_evaluator(config, profile, workload)
    ran = []
    with limited_threads(evaluator, threads):
        api.work_on(study, config, knobs, evaluator,
                    [*callbacks, lambda s, t: ran.append(t.number)])
    return len(ran)
