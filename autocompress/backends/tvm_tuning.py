"""MetaSchedule tuning records, kept per target and shared by every candidate.

Tuning costs about 10 s per trial on 2 cores, so it never runs per search trial. A
persistent MetaSchedule JSON database per target (``cache_dir()/tvm-tuning/<target>/``) keys
records by workload: the structure of each fused TIR kernel (shapes and dtypes, not weight
values). Candidates whose pruned widths and ranks are snapped to multiples of 4 or 8 share
kernels, so records tuned for one front point serve others. ``lookup`` reports how many of a
model's kernels already have a record (the cache hit rate); ``tune`` spends a trial budget
on the kernels that do not.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

from ..paths import cache_dir

MODULE_EQUALITY = "ignore-tensor"


def database_dir(target) -> Path:
    """Where the records for ``target`` (a ``tvm_compile.TvmTarget``) live."""
    digest = hashlib.sha256(target.key().encode()).hexdigest()[:12]
    return cache_dir() / "tvm-tuning" / f"{target.kind}-{digest}"


def _database(target):
    from tvm.s_tir import meta_schedule as ms

    path = database_dir(target)
    path.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(work_dir=str(path), module_equality=MODULE_EQUALITY)


def prepare(mod, target):
    """Lower Relax operators to fused TIR kernels, as ``compile_relax`` does before it reads
    the database, so tuning and compiling see the same kernels (the database keys)."""
    import tvm
    from tvm import relax
    from tvm.relax import pipeline

    try:
        dispatch = list(pipeline.library_dispatch_passes(target.target))
    except (ValueError, AttributeError):
        dispatch = []
    passes = dispatch + [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                         relax.transform.FuseOps(), relax.transform.FuseTIR()]
    with target.target:
        return tvm.ir.transform.Sequential(passes)(mod)


def extract(mod, target) -> list:
    """The model's tunable kernels (MetaSchedule tasks) for the target."""
    from tvm.s_tir import meta_schedule as ms

    return list(ms.relax_integration.extract_tasks(prepare(mod, target), target.target,
                                                   module_equality=MODULE_EQUALITY))


def has_records(target) -> bool:
    """Whether the target's database holds any tuning record yet."""
    records = database_dir(target) / "database_tuning_record.json"
    return records.exists() and records.stat().st_size > 0


def lookup(mod, target) -> dict:
    """How many of the model's kernels have tuning records: tasks, hits, hit_rate, digest.

    ``applied`` is true when at least one record will be used by :func:`build`.
    """
    tasks = extract(mod, target)
    if not has_records(target):
        return {"tasks": len(tasks), "hits": 0, "hit_rate": 0.0, "applied": False,
                "digest": "untuned"}
    database = _database(target)
    hits, digest = 0, hashlib.sha256()
    for task in tasks:
        record = _best_record(database, task)
        if record is not None:
            hits += 1
            digest.update(str(record.trace).encode())
    return {"tasks": len(tasks), "hits": hits,
            "hit_rate": hits / len(tasks) if tasks else 1.0, "applied": hits > 0,
            "digest": digest.hexdigest()[:16] if hits else "untuned"}


def _best_record(database, task):
    module = task.dispatched[0]
    if not database.has_workload(module):
        return None
    return database.query_tuning_record(module, task.target, task.task_name)


def build(mod, target, tuning: dict):
    """A Relax executable: tuned kernels from the database where it has them, default
    schedules for the rest."""
    import tvm

    try:
        if tuning.get("applied"):
            from tvm.s_tir import meta_schedule as ms

            return ms.relax_integration.compile_relax(_database(target), prepare(mod, target),
                                                      target.target, None)
        return tvm.compile(mod, target=target.target)
    except Exception as err:
        from .tvm_errors import TvmError

        raise TvmError(f"TVM compilation for {target.description} failed: "
                       f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None


def tune(mod, target, max_trials: int, seed: int = 0, trials_per_iter: int = 16,
         build_timeout_s: float = 300.0) -> dict:
    """Tune the model's kernels that have no record yet, up to ``max_trials`` measured
    schedules in all; records land in the target's database. Runs here, so only for targets
    that run here (``target.runs_here``)."""
    from tvm.s_tir import meta_schedule as ms

    if not target.runs_here:
        raise ValueError(f"tuning runs candidates here; {target.description} does not run here")
    before = lookup(mod, target)
    start = time.perf_counter()
    failed = []
    if before["hits"] < before["tasks"]:
        database = _database(target)
        todo = [t for t in extract(mod, target) if _best_record(database, t) is None]
        logs = database_dir(target) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        per_task = max(1, max_trials // max(1, len(todo)))
        for task in todo:
            # One task at a time: a schedule rule that fails on one fused kernel (seen on
            # conv + clip) costs that kernel its records, not the whole tuning run.
            try:
                contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                    [task], str(logs), seed=seed)
                ms.tune.tune_tasks(
                    tasks=contexts, task_weights=weights, work_dir=str(logs),
                    max_trials_global=per_task, num_trials_per_iter=min(trials_per_iter, per_task),
                    builder=ms.builder.LocalBuilder(max_workers=1, timeout_sec=build_timeout_s),
                    runner=ms.runner.LocalRunner(timeout_sec=60), database=database,
                    cost_model="random", module_equality=MODULE_EQUALITY)
            except Exception as err:   # recorded; the other kernels still get tuned
                failed.append({"task": task.task_name, "error": str(err).splitlines()[0][:200]})
    seconds = time.perf_counter() - start
    after = lookup(mod, target)
    return {"seconds": seconds, "max_trials": max_trials, "before": before, "after": after,
            "failed": failed}
