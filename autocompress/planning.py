"""``autocompress plan``: which device profiles can host the model within a budget, and how.

One search serves every target: quality and size do not depend on the device, so each
candidate is built and scored once (on the host), while the evaluator also predicts
latency, energy and RAM for every profile (``SearchConfig.extra_targets``). Then, per
target, the best-quality trial meeting that target's constraints is picked from *all*
complete trials, not only the host's Pareto front. The result goes to ``plan.json`` in
the run folder, where ``autocompress report`` and ``autocompress export`` find it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from . import api
from .device_profiles import DeviceProfile, known_targets, resolve_target
from .files import write_json_atomic
from .trial_record import TrialMetrics, metrics_of
from .report.table import plan_summary
from .search.objectives import Budget, OnTarget
from .units import format_energy, format_size, format_time


@dataclass
class PlanConfig:
    model: str = "minilm"
    budget: Budget = field(default_factory=Budget)
    targets: Sequence[str] = ()          # empty: every known profile
    trials: int = 20
    seed: int = 0
    timeout_s: float | None = None
    trial_timeout_s: float | None = 600.0
    out: str | None = None
    command: Sequence[str] = ()
    data: str | None = None              # ONNX files: real inputs (see api.SearchConfig)
    input_shapes: Sequence[str] = ()
    metric: str | None = None


@dataclass
class PlanResult:
    run_dir: Path
    rows: list[dict]

    @property
    def any_feasible(self) -> bool:
        return any(r["feasible"] for r in self.rows)


def plan(config: PlanConfig, progress: Callable | None = None) -> PlanResult:
    """Search once on the host with every profile predicted per trial; pick per target."""
    profiles = [resolve_target(t) for t in (config.targets or known_targets())]
    stem = Path(config.model).stem if config.model.endswith(".onnx") else config.model
    out = config.out or str(Path("results") /
                            f"{time.strftime('%Y%m%d-%H%M%S')}-{stem.replace(':', '-')}-plan")
    device_free = Budget(max_size_bytes=config.budget.max_size_bytes,
                         min_quality=config.budget.min_quality)
    search = api.SearchConfig(
        model=config.model, target="host", budget=device_free, trials=config.trials,
        timeout_s=config.timeout_s, trial_timeout_s=config.trial_timeout_s, seed=config.seed,
        out=out, command=list(config.command), extra_targets=[p.name for p in profiles],
        data=config.data, input_shapes=list(config.input_shapes), metric=config.metric,
        finalize_s=0.0)
    try:
        run_dir = api.search(search, progress=progress).run_dir
    except api.InfeasibleError as err:   # no trial fits the size / quality: every row says why
        run_dir = err.run_dir
    document = json.loads((run_dir / "pareto.json").read_text())
    trials = complete_trials(document)
    rows = [pick(profile, trials, config.budget) for profile in profiles]
    write_json_atomic(run_dir / "plan.json", {
        "constraints": config.budget.to_dict(), "search_target": "host",
        "n_trials": len(trials), "targets": rows})
    return PlanResult(run_dir, rows)


def complete_trials(document: dict) -> list:
    from optuna.trial import TrialState

    from .search.storage import load_study

    study = load_study(document["study"]["storage"], document["study"]["name"])
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if metrics_of(t) is not None]


def violations(metrics: TrialMetrics, numbers: dict, budget: Budget,
               profile: DeviceProfile) -> dict:
    """Relative excess per constraint on one target (> 0 violated); the board's RAM and
    storage are limits too."""
    out = budget.violations(OnTarget(metrics, numbers))
    quality = out.pop("quality", None)
    board = {"RAM": (numbers["peak_ram_bytes"], profile.ram_bytes),
             "storage": (metrics.size_bytes, profile.storage_bytes)}
    out.update({k: value / limit - 1 for k, (value, limit) in board.items() if limit})
    if quality is not None:
        out["quality"] = quality
    return out


def pick(profile: DeviceProfile, trials: Sequence, budget: Budget) -> dict:
    """The best-quality trial meeting every constraint on ``profile``, or why there is none."""
    scored = []
    for t in trials:
        metrics = metrics_of(t)
        numbers = metrics.per_target.get(profile.name)
        if numbers is not None:
            scored.append((t, metrics, numbers, violations(metrics, numbers, budget, profile)))
    row = {"target": profile.name, "description": profile.description, "feasible": False,
           "n_feasible": 0, "best": None, "reason": None}
    ok = [s for s in scored if all(v <= 0 for v in s[3].values())]
    row["n_feasible"] = len(ok)
    if ok:
        t, metrics, numbers, _ = max(ok, key=lambda s: (s[1].quality, -s[2]["latency_s"],
                                                        -s[1].size_bytes))
        row.update(feasible=True, best=_point(t, metrics, numbers))
    elif scored:
        t, metrics, numbers, v = min(scored, key=lambda s: sum(max(0, x) for x in s[3].values()))
        blocked = ", ".join(_describe(k, budget, profile) for k, x in v.items() if x > 0)
        row["reason"] = (f"closest was trial {t.number} (quality {metrics.quality:.4f}, size "
                         f"{format_size(metrics.size_bytes)}, latency "
                         f"{format_time(numbers['latency_s'])}) which violates {blocked}")
    else:
        row["reason"] = "no trial completed with numbers for this target"
    return row


def _describe(key: str, budget: Budget, profile: DeviceProfile) -> str:
    if key == "RAM":
        return f"peak RAM <= {format_size(profile.ram_bytes)} (the board's memory)"
    if key == "storage":
        return f"size <= {format_size(profile.storage_bytes)} (the board's storage)"
    return budget.describe(key)


def _point(trial, metrics: TrialMetrics, numbers: dict) -> dict:
    plan = trial.user_attrs["plan"]
    return {"id": trial.number, "quality": metrics.quality,
            "quality_metric": metrics.quality_metric, "size_bytes": metrics.size_bytes,
            "latency_s": numbers["latency_s"], "energy_j": numbers["energy_j"],
            "peak_ram_bytes": numbers["peak_ram_bytes"], "plan": plan,
            "plan_digest": metrics.plan_digest, "artifact_sha256": metrics.artifact_sha256,
            "plan_summary": plan_summary(plan),
            "provenance": {"quality": {"kind": "measured", "device": "host",
                                       "runtime": metrics.host_latency["runtime"],
                                       "data": "held-out evaluation set of the workload"},
                           "size_bytes": {"kind": "measured", "method": "bytes of the artifact file"},
                           **numbers["provenance"]}}


def rows_table(rows: list[dict], budget: Budget):
    """Rich table of a plan result for the terminal."""
    from rich import box
    from rich.table import Table

    limits = [budget.describe(k) for k, v in (("size", budget.max_size_bytes),
                                              ("latency", budget.max_latency_s),
                                              ("energy", budget.max_energy_j),
                                              ("quality", budget.min_quality)) if v is not None]
    table = Table(title=f"deployment plan: {', '.join(limits) or 'no budget'} "
                        "(p = predicted, m = measured)", box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True)
    for column in ("target", "trial", "quality", "size", "latency", "energy", "peak RAM"):
        table.add_column(column, justify="left" if column == "target" else "right",
                         no_wrap=True)
    for r in rows:
        b = r["best"]
        if b is None:
            table.add_row(r["target"], "no fit", "", "", "", "", "")
            continue
        tag = {k: "m" if b["provenance"][k]["kind"] == "measured" else "p"
               for k in ("latency_s", "energy_j", "peak_ram_bytes")}
        table.add_row(r["target"], str(b["id"]), f"{b['quality']:.4f}",
                      format_size(b["size_bytes"]), f"{format_time(b['latency_s'])} {tag['latency_s']}",
                      f"{format_energy(b['energy_j'])} {tag['energy_j']}",
                      f"{format_size(b['peak_ram_bytes'])} {tag['peak_ram_bytes']}")
    plans = {r["best"]["id"]: r["best"]["plan_summary"] for r in rows if r["best"]}
    notes = [f"trial {i}: {summary}" for i, summary in sorted(plans.items())]
    notes += [f"{r['target']}: {r['reason']}" for r in rows if r["reason"]]
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table

