"""The library entry point behind ``autocompress search``: one config in, one run folder out.

Run folder (``results/<run-id>/`` or ``--out``): ``study.db`` (Optuna storage, unless
``--storage`` names another; created first, so a storage that cannot be opened leaves
nothing behind), ``config.json`` (then: enough to resume; the default storage is stored
relative to the folder, so a moved or copied folder resumes its own study), ``search.log``
(each failed trial's plan and traceback), and at the end
``artifacts/<plan-digest>.onnx`` for each front point and ``pareto.json`` (written last,
atomically: its presence means the run finished).
"""
from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .compression.knobs import onnx_knobs, torch_knobs
from .compression.plan import Plan
from .compression.weights.quantize import to_opset
from .device_profiles import DeviceProfile, load_profile, resolve_target
from .pipeline import Evaluator
from .files import write_json_atomic
from .trial_record import metrics_of
from .report.pareto_json import SCHEMA_VERSION, point
from .report.environment import environment
from .search import pareto
from .search.objectives import OBJECTIVES, Budget, OnTarget
from .search.queue import drain
from .search.study import (DUPLICATE_ATTR, create_study, finished_count, mark_interrupted,
                           open_study, run_trials)
from .workloads import Workload, WorkloadError, load_workload
from . import budget_plans, crash_note, finalize, verdict, workers
from .run_config import RunError, SearchConfig, read_config  # noqa: F401 (re-exported)


class InfeasibleError(RuntimeError):
    """No trial met the constraints; the message names the closest trial and the blocker."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = run_dir


def load_user_workload(model: str, data: str | None = None, input_shapes: Sequence[str] = (),
                       metric: str | None = None) -> Workload:
    """:func:`load_workload`, with anything a user's factory raises as one WorkloadError
    line naming it (the original error stays chained for ``--debug``)."""
    try:
        return load_workload(model, data, input_shapes, metric)
    except WorkloadError:
        raise
    except Exception as err:   # noqa: BLE001 - user code raises anything
        line = (str(err).strip().splitlines() or [""])[0]
        raise WorkloadError(f"workload {model!r} failed to load: {type(err).__name__}"
                            + (f": {line}" if line else "")) from err


@dataclass
class SearchResult:
    run_dir: Path
    document: dict


def resolve_profile(config: SearchConfig) -> DeviceProfile:
    return load_profile(config.profile) if config.profile else resolve_target(config.target)


def split_targets(config: SearchConfig) -> SearchConfig:
    """``--target a,b,c``: one search, primary target ``a`` (the sampler's latency objective),
    ``b`` and ``c`` predicted for every trial and given a front of their own."""
    names = [t.strip() for t in config.target.split(",") if t.strip()]
    if len(names) <= 1:
        return config
    if len(set(names)) != len(names):
        raise RunError(f"--target lists a target twice: {config.target}")
    extra = [n for n in [*names[1:], *config.extra_targets] if n != names[0]]
    for name in extra:
        resolve_target(name)      # unknown name: one clear line before any work
    return replace(config, target=names[0], extra_targets=list(dict.fromkeys(extra)))


def rpc_device(config: SearchConfig):
    """The boards to measure on (``--rpc-tracker``/``--rpc-key``), checked reachable, or None."""
    if not config.rpc_tracker:
        if config.rpc_key:
            raise RunError("--rpc-key needs --rpc-tracker HOST:PORT")
        return None
    from .backends.tvm_rpc import RpcDevice

    device = RpcDevice.parse(config.rpc_tracker, config.rpc_key or "")
    device.check()
    return device


def _onnx_file_fields(workload: Workload) -> dict:
    """pareto.json's account of how a user's ONNX file was read (empty for other models)."""
    if workload.onnx_path is None:
        return {}
    return {"inputs": workload.data_source, "synthetic_inputs": workload.synthetic_inputs,
            "preparation": list(workload.preparation), "techniques_path": workload.techniques_path}


def config_workload(config: SearchConfig) -> Workload:
    """The workload a run's config names (model, and for ONNX files its inputs and metric)."""
    return load_user_workload(config.model, config.data, config.input_shapes, config.metric)


def discover_skips(workload: Workload) -> list:
    """Where a technique does not apply, and why (``Skip`` records)."""
    if workload.model is None:
        from .compression.knobs import onnx_skips

        return onnx_skips(onnx_weights(workload))
    import torch

    from .compression.knobs import skipped_knobs

    args = [torch.from_numpy(workload.example[n]) for n in workload.input_names]
    return skipped_knobs(workload.model, args)


def discover_knobs(workload: Workload):
    """The search space of a workload (see compression.knobs)."""
    if workload.model is not None:
        import torch

        args = [torch.from_numpy(workload.example[n]) for n in workload.input_names]
        return torch_knobs(workload.model, args, workload.input_names)
    return onnx_knobs(onnx_weights(workload))


def onnx_weights(workload: Workload) -> dict:
    """An ONNX-file workload's weights: name -> (kind, shape) (compression/weights/
    onnx_graph.py)."""
    import onnx

    from .compression.weights.onnx_graph import weights

    return weights(to_opset(onnx.load(str(workload.onnx_path))))


def new_run_dir(config: SearchConfig, profile: DeviceProfile) -> Path:
    if config.out:
        run_dir = Path(config.out)
        if run_dir.exists() and not run_dir.is_dir():
            raise RunError(f"--out {run_dir} is a file, not a folder")
        if (run_dir / "config.json").exists():
            raise RunError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    else:
        stem = Path(config.model).stem if config.model.endswith(".onnx") else config.model
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{stem.replace(':', '-')}-{profile.name}"
        run_dir = Path("results") / name
    return run_dir


def make_run_dir(run_dir: Path) -> bool:
    """Create the run folder (one line if the path cannot be one); True: this call made it."""
    existed = run_dir.is_dir()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create the run folder {run_dir}: {err.strerror or err}") from None
    return not existed


def check_compressible(workload: Workload) -> None:
    """A model the techniques find nothing in is refused before any trial runs."""
    if not discover_knobs(workload):
        quantized = {}
        if workload.onnx_path is not None and workload.model is None:
            from .workloads.onnx_file import quantized_ops

            quantized = quantized_ops(workload.onnx_path)
        already = ("; its weights are already quantized (" + ", ".join(
            f"{n} {op}" for op, n in sorted(quantized.items(), key=lambda i: -i[1])) + ")"
                   if quantized else "")
        raise RunError(f"nothing to compress in {workload.name}: no weight that a technique "
                       "can act on (2+ dimensional float initializers read by MatMul, Conv, "
                       f"Gemm, Gather or a recurrent op, subgraphs included){already}")


def search(config: SearchConfig, progress: Callable | None = None) -> SearchResult:
    """Validate everything the user gave, then run a new search into a fresh run folder."""
    config = split_targets(config)
    workers.check(config.workers, config.storage)
    from .search.study import SAMPLERS

    if config.sampler not in SAMPLERS:
        raise RunError(f"sampler must be one of {', '.join(SAMPLERS)}, got {config.sampler!r}")
    profile = resolve_profile(config)
    check_cost(config, profile)
    run_dir = new_run_dir(config, profile)
    workload = config_workload(config)
    check_compressible(workload)
    created = make_run_dir(run_dir)
    config = replace(config, storage=config.storage or workers.default_storage(config.workers))
    try:   # the study first: a storage that cannot be opened leaves no run to block a retry
        create_study(workers.resolve_storage(config.storage, run_dir), config.study,
                     config.seed, config.trials, config.sampler)
    except BaseException:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    write_json_atomic(run_dir / "config.json", config.to_dict())
    return _run(config, run_dir, profile, workload, progress)


def resume(run_dir: Path | str, trials: int | None = None,
           progress: Callable | None = None, n_workers: int | None = None) -> SearchResult:
    """Continue a killed (or finished, with more ``trials``) search from its storage."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    check_study(config, run_dir)
    if trials is not None or n_workers is not None:
        config = replace(config, trials=config.trials if trials is None else trials,
                         workers=config.workers if n_workers is None else n_workers)
        workers.check(config.workers, config.storage)
        write_json_atomic(run_dir / "config.json", config.to_dict())
    profile, workload = resolve_profile(config), config_workload(config)
    (run_dir / "pareto.json").unlink(missing_ok=True)   # stale until this run completes
    return _run(config, run_dir, profile, workload, progress)


def check_study(config: SearchConfig, run_dir: Path) -> None:
    """A resume continues its study or nothing: a missing or empty study file (deleted,
    truncated) is refused, never silently replaced by a new study."""
    from .search.storage import load_study

    url = workers.resolve_storage(config.storage or workers.default_storage(config.workers),
                                  run_dir)
    path = workers.storage_file(url)
    if path is not None and not (path.is_file() and path.stat().st_size > 0):
        state = "missing" if not path.exists() else "empty"
        raise RunError(f"cannot resume {run_dir}: its study file {path} is {state}, so its "
                       "trials are gone; start a new search (another --out) instead")
    load_study(url, config.study)   # one line naming the studies there if ours is not


STUDY_NAME = "autocompress"


def _run(config, run_dir, profile, workload, progress) -> SearchResult:
    config = replace(config, storage=workers.resolve_storage(config.storage, run_dir))
    knobs, seeds, sensitivity = search_space(config, workload, progress)
    evaluator = make_evaluator(config, profile, workload)
    directed = _budget_directed(config, discover_knobs(workload), sensitivity, evaluator,
                                progress, _queue_pending(config))
    if directed.seeds:
        knobs = budget_plans.widen(knobs, discover_knobs(workload), directed.seeds)
    study = open_study(config.storage, config.study, config.seed, config.trials, knobs,
                       [*directed.seeds, *seeds], config.sampler, config.anchors,
                       attrs={WIDENED: {k.key: list(k.choices) for k in knobs}}
                       if directed.seeds else None)
    if sensitivity is not None and "sensitivity" not in study.user_attrs:
        study.set_user_attr("sensitivity", sensitivity.to_dict())
    if directed.problem is not None and budget_plans.PROBLEM_ATTR not in study.user_attrs:
        study.set_user_attr(budget_plans.PROBLEM_ATTR, directed.problem.to_dict())
        study.set_user_attr(budget_plans.SEEDS_ATTR, directed.record)
    crash_note.tell(storage=config.storage, study=config.study, run_dir=str(run_dir))
    mark_interrupted(study)
    workers.publish(study, config, profile)
    callbacks = [failure_log(run_dir), *([progress] if progress else [])]
    if progress is not None and hasattr(progress, "start"):
        progress.start(config.trials, finished_count(study))
    workers.run_here(study, config, knobs, evaluator, callbacks, run_dir, work_on)
    if progress is not None and hasattr(progress, "stop"):
        progress.stop()
    finals = finalize.run(study, config.budget, evaluator,
                          finalize.FinalizeConfig(seconds=finalize.box(config.finalize_s,
                                                                       config.budget),
                                                  seed=config.seed),
                          run_dir, getattr(progress, "finalize", None))
    document = _document(config, run_dir, profile, workload, study, knobs, evaluator, finals)
    write_json_atomic(run_dir / "pareto.json", document)
    if not document["front"]:
        raise InfeasibleError(document["infeasible_reason"], run_dir)
    return SearchResult(run_dir, document)


def failure_log(run_dir: Path) -> Callable:
    """Trial callback: a failed trial's reason, plan and traceback go to RUN/search.log
    (the terminal gets one line, pareto.json the reason and traceback)."""
    from optuna.trial import TrialState

    def log(study, trial) -> None:
        if trial.state != TrialState.FAIL:
            return
        attrs = trial.user_attrs
        with open(run_dir / "search.log", "a", encoding="utf-8") as out:
            out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} trial {trial.number} failed: "
                      f"{attrs.get('fail_reason', 'unknown')}\n  plan: "
                      f"{json.dumps(attrs.get('plan'))}\n{attrs.get('traceback', '')}\n")
    return log


WIDENED = "space"
"""Study attr: the sampler's knobs when budget seeds widened them (resume and workers)."""


def _queue_pending(config) -> bool:
    """Whether the study's queue is still to be made (a new study, or one whose queue
    creation was killed): only then are seeds computed."""
    from .search.study import QUEUE_ATTR

    attrs = stored_attrs(config.storage, config.study)
    return attrs is None or bool(attrs.get(QUEUE_ATTR, True))


def _budget_directed(config, knobs, analysis, evaluator, progress, new_study: bool):
    """Seeds solved to fit the budget (budget_plans.py), for a new study with a budget."""
    if not (config.budget_seeds and new_study and config.anchors and analysis is not None):
        return budget_plans.BudgetPlans([], None, {})
    if not budget_plans.limits_of(config.budget):
        return budget_plans.BudgetPlans([], None, {})
    note = getattr(progress, "note", None)
    if note is not None:
        note("budget-directed seeds (integer program over the sensitivity, checked on builds)")
    trains_later = finalize.box(config.finalize_s, config.budget) > 0
    return budget_plans.directed(knobs, analysis, config.budget, evaluator,
                                 distilled=not trains_later)


def search_space(config: SearchConfig, workload: Workload, progress=None):
    """(knobs the sampler sees, seed plans, Sensitivity or None). With ``config.sensitivity``
    the per-layer analysis (autocompress.sensitivity; stored with the study so a resume or a
    worker on another machine sees the same space) removes catastrophic choices and seeds
    greedy mixed plans."""
    from . import sensitivity as sens
    from .search import seeding

    knobs = discover_knobs(workload)
    if not config.sensitivity:
        return knobs, [], None
    attrs = stored_attrs(config.storage, config.study) or {}
    stored = attrs.get("sensitivity")
    if stored is not None:
        analysis = sens.Sensitivity.from_dict(stored)
    else:
        note = getattr(progress, "note", None)
        if note is not None:
            note("per-layer sensitivity analysis (once per model, cached)")
        analysis = sens.analyse(workload, knobs, progress=getattr(progress, "sensitivity", None))
    shaped = seeding.shape(knobs, analysis.drop, analysis.base_quality)
    seeds = seeding.seed_params(shaped, analysis.drop, analysis.saved_bytes,
                                analysis.base_quality, analysis.latency_ratio)
    if WIDENED in attrs:     # the space the study was made with (budget seeds widened it)
        from dataclasses import replace as with_choices

        by_key = {k.key: k for k in knobs}
        shaped = [with_choices(by_key[key], choices=tuple(choices))
                  for key, choices in attrs[WIDENED].items() if key in by_key]
    return shaped, seeds, analysis


def stored_sensitivity(storage: str | None, study_name: str = STUDY_NAME) -> dict | None:
    """The sensitivity a study was created with (None: no such study yet)."""
    return (stored_attrs(storage, study_name) or {}).get("sensitivity")


def stored_attrs(storage: str | None, study_name: str = STUDY_NAME) -> dict | None:
    """A study's user attrs (None: no such study yet)."""
    import optuna

    from .search.storage import open_storage

    if storage is None:
        return None
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        return None
    return dict(study.user_attrs)


def make_evaluator(config: SearchConfig, profile: DeviceProfile, workload: Workload) -> Evaluator:
    """The trial evaluator a config asks for (extra targets, board over RPC)."""
    return Evaluator(workload, profile,
                     extra_profiles=tuple(resolve_target(t) for t in config.extra_targets),
                     device=rpc_device(config), cost=config.cost)


def check_cost(config: SearchConfig, profile: DeviceProfile) -> None:
    """``--cost measured`` needs a target this run can measure: host, or a board over RPC."""
    from .cost_models.active import COST_MODES

    if config.cost not in COST_MODES:
        raise RunError(f"--cost must be one of {', '.join(COST_MODES)}, got {config.cost!r}")
    if config.cost == "measured" and profile.name != "host" and not config.rpc_tracker:
        raise RunError(f"--cost measured: target {profile.name!r} cannot be measured from here; "
                       "attach it with --rpc-tracker HOST:PORT, or use --cost predicted|auto")


def work_on(study, config: SearchConfig, knobs, evaluator: Evaluator,
            callbacks: Sequence[Callable] = ()) -> None:
    """Run this process's share of trials on ``study`` until it holds ``config.trials``
    finished trials: what the search process and every worker process do. Trials come
    from the study's fixed queue (search/queue.py), so N processes never overshoot."""
    refine = budget_plans.refiner(study, knobs, evaluator.workload)
    drain(study, lambda queued: run_trials(
        queued, knobs, evaluator.evaluate, config.budget, config.trials, config.timeout_s,
        config.trial_timeout_s, callbacks, config.multi_fidelity, refine),
        {"worker": workers.identity(evaluator.timing.threads)})


def _document(config, run_dir, profile, workload, study, knobs, evaluator,
              finals: dict | None = None) -> dict:
    from optuna.trial import TrialState

    points = []
    for trial in pareto.front(study):
        plan = Plan.from_dict(trial.user_attrs["plan"])
        relative = Path("artifacts") / f"{plan.digest()}.onnx"
        evaluator.export_artifact(plan, run_dir / relative)
        points.append(point(trial, str(relative)))
        if config.qat_steps > 0 and workload.model is not None:
            points[-1]["qat"] = _qat_finalist(evaluator, plan, config.qat_steps, run_dir)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    baseline = next((t for t in complete if not t.user_attrs.get("plan", {}).get("units")), None)
    by_number = {t.number: t for t in complete}
    recovered = [finalize.final_point(by_number[n], r) for n, r in sorted((finals or {}).items())
                 if n in by_number and (run_dir / r["artifact"]).is_file()]
    points = finalize.merge_front(points, recovered) if recovered else points
    document = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "autocompress", "version": __version__, "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        "command": list(config.command),
        "config": config.to_dict(),
        "workload": {"name": workload.name, "description": workload.description,
                     "n_knobs": len(knobs), **_onnx_file_fields(workload),
                     "skipped_knobs": [s.message() for s in discover_skips(workload)]},
        "target": {"name": profile.name, "description": profile.description,
                   "tvm_target": profile.tvm_target, "profile": profile.to_dict()},
        "objectives": [{"name": n, "direction": d} for n, d in OBJECTIVES],
        "budget": config.budget.to_dict(),
        "study": {"storage": config.storage, "name": study.study_name, "n_trials": len(trials),
                  "n_complete": len(complete), "n_failed": len(failed),
                  "n_duplicates": sum(DUPLICATE_ATTR in t.user_attrs for t in trials),
                  "n_feasible": sum(pareto.is_feasible(t) for t in complete),
                  "failures": [{"id": t.number, "reason": t.user_attrs.get("fail_reason", "unknown"),
                                "traceback": t.user_attrs.get("traceback")} for t in failed],
                  "workers": workers.summary(config, trials)},
        "baseline": point(baseline, None) if baseline else None,
        "front": points,
    }
    if config.extra_targets:
        document["fronts"] = {profile.name: points,
                              **_target_fronts(config, complete, run_dir, evaluator)}
    document["study"]["hypervolume"] = _hypervolume(complete, baseline)
    document["finalize"] = {"seconds": finalize.box(config.finalize_s, config.budget),
                            "training_data": workload.training_source,
                            "probes_ranked_by": ["quality", *workload.held_details],
                            "finals": {str(n): r for n, r in sorted((finals or {}).items())},
                            "probes": finalize.records(study)[0]}
    if budget_plans.SEEDS_ATTR in study.user_attrs:
        document["study"][budget_plans.SEEDS_ATTR] = study.user_attrs[budget_plans.SEEDS_ATTR]
    document["verdict"] = verdict.judge(points, complete, baseline, config.budget, finals or {})
    if not points:
        document["infeasible_reason"] = _infeasible_reason(study, config.budget)
    return document


def _target_fronts(config, complete, run_dir, evaluator) -> dict:
    """One front per extra target of a multi-target search (``--target a,b,c``): every trial
    was built and scored once; each target's front ranks them by its own latency, with the
    budget checked against its own numbers."""
    from .report.pareto_json import point_on_target

    fronts = {}
    for name in config.extra_targets:
        scored = []
        for trial in complete:
            metrics = metrics_of(trial)
            numbers = metrics.per_target.get(name) if metrics else None
            if numbers is None or not pareto.is_final(trial):
                continue
            violations = config.budget.violations(OnTarget(metrics, numbers))
            if all(v <= 0 for v in violations.values()):
                scored.append((trial, violations))
        constraints = {t.number: v for t, v in scored}
        best = pareto.non_dominated([t for t, _ in scored], lambda t, n=name: (
            metrics_of(t).quality, metrics_of(t).per_target[n]["latency_s"],
            metrics_of(t).size_bytes))
        fronts[name] = []
        for trial in best:
            plan = Plan.from_dict(trial.user_attrs["plan"])
            relative = Path("artifacts") / f"{plan.digest()}.onnx"
            evaluator.export_artifact(plan, run_dir / relative)
            fronts[name].append(point_on_target(trial, str(relative), name,
                                                constraints[trial.number]))
    return fronts


def _hypervolume(complete, baseline) -> dict | None:
    """Hypervolume of the feasible points after each complete trial, in completion order
    (search/hypervolume.py: normalised by the uncompressed model's trial)."""
    from .search import hypervolume

    if baseline is None or baseline.values is None:
        return None
    scale = hypervolume.Scale(*baseline.values)
    ordered = sorted(complete, key=lambda t: (t.datetime_complete or 0, t.number))
    volumes = hypervolume.history(
        [t.values if pareto.is_feasible(t) and pareto.is_final(t) else None for t in ordered],
        scale)
    return {"scale": scale.to_dict(), "reference": list(hypervolume.REFERENCE),
            "definition": "relative (quality, latency, size) to the uncompressed trial",
            "history": [{"trial": t.number, "hypervolume": v} for t, v in zip(ordered, volumes)]}


def _qat_finalist(evaluator, plan: Plan, steps: int, run_dir: Path) -> dict:
    """QAT of one front point, measured beside its PTQ numbers (the point's own ``quality``
    stays the PTQ one the search ranked; size and graph are the same, only weights differ)."""
    import shutil

    from .compression.qat import QATConfig

    source, numbers = evaluator.evaluate_qat(plan, QATConfig(steps=steps))
    relative = Path("artifacts") / f"{plan.digest()}-qat.onnx"
    shutil.copyfile(source, run_dir / relative)
    return {"artifact": str(relative), **numbers}


def _infeasible_reason(study, budget: Budget) -> str:
    miss = pareto.closest_miss(study)
    n = len(study.trials)
    if miss is None:
        return f"no trial completed in {n} trials (see the failures in pareto.json)"
    from .units import format_size

    m = metrics_of(miss.trial)
    blockers = ", ".join(budget.describe(k) for k in miss.violated)
    return (f"no candidate met the constraints in {n} trials; closest was trial "
            f"{miss.trial.number} (size {format_size(m.size_bytes)}, latency "
            f"{m.target['latency_s'] * 1e3:.2f} ms, quality {m.quality:.4f}) "
            f"which violates {blockers}")


def join(storage: str, study_name: str, threads: int | None = None, seed: int | None = None,
         callbacks=()) -> int:
    """``autocompress worker``: run queued trials of a running study; returns how many."""
    import torch

    from .search.storage import StorageError, load_study, redact
    from .search.study import make_sampler

    crash_note.follow_parent()
    study = load_study(storage, study_name)
    crash_note.tell(storage=storage, study=study_name)
    attrs = study.user_attrs
    if workers.CONFIG_ATTR not in attrs:
        raise StorageError(f"study {study_name!r} in {redact(storage)} was not created by "
                           "`autocompress search` (no config in its user attrs)")
    # the URL as this machine reaches the storage (the search may have said localhost)
    config = replace(SearchConfig.from_dict(attrs[workers.CONFIG_ATTR]), storage=storage)
    profile = DeviceProfile.from_dict(attrs[workers.PROFILE_ATTR], f"study {study_name!r} profile")
    study.sampler = make_sampler(config.seed if seed is None else seed, config.trials,
                                 config.sampler)
    threads = threads or workers.threads_per_worker(1)
    torch.set_num_threads(threads)   # loading a workload may train a model
    workload = config_workload(config)
    knobs = search_space(config, workload)[0]   # as the search shaped it (stored analysis)
    evaluator = make_evaluator(config, profile, workload)
    ran = []
    with workers.limited_threads(evaluator, threads):
        work_on(study, config, knobs, evaluator, [*callbacks, lambda s, t: ran.append(t.number)])
    return len(ran)
