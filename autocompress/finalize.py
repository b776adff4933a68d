"""Finalize: long recovery training for the most promising candidates that fit the budget.

A trial affords a few hundred training steps at most; the compression a tight budget needs
takes thousands. After the search, within a time box (``--finalize 20m``):

1. candidates: complete trials (full or proxy fidelity) that meet every limit of the budget
   but quality: the best by untrained quality, the budget seeds, the smallest (a
   structurally heavy plan keeps little quality untrained but may recover the most);
2. a short probe run of each (``PROBE_SHARE`` of the box, split among them) estimates its
   *recovered* quality;
3. the best probe (by the lowest of its quality and the workload's ``held_details``)
   gets the long run with what is left of the box (QAT: every stored weight
   fake-quantized exactly, :mod:`compression.qat`, on the workload's training set). Its
   artifact and numbers replace the untrained ones on the front; both qualities are kept.

Each finished probe and final is stored in the study (user attrs ``finalize:probe:N`` and
``finalize:final:N``) right after its artifact is written, so a resume after a kill keeps
them. Step counts come from the measured seconds per step and are recorded: rebuilding
with the recorded config (same thread count) gives the same bytes.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from .compression.plan import Plan
from .crash_hook import stop_at
from .trial_record import metrics_of

DEFAULT_S = 1200.0
"""20 minutes: on 2 cores the 4 MB MiniLM of ``make demo`` needs about 1,700 steps of 0.5 s
to keep cosine and Spearman above 0.90 (benchmarks/tight_budget.py); the probes take a fifth."""
MAX_STEPS = 3000
"""A run never takes more steps than this, whatever its box (a small model finishes early)."""
PROBE = "finalize:probe:"
FINAL = "finalize:final:"
PROBE_SHARE = 0.2
MIN_PROBE_STEPS, MIN_FINAL_STEPS = 20, 50
TIMING_STEPS = 3
LEARNING_RATE = {"embedding": 6e-4, "logits": 1e-3}
"""Peak of the one-cycle schedule (AdamW): a pruned student relearns, not a nudge. MiniLM's
coarse 3.9 MB seed after the 1,682 steps ``make demo`` gave it (cosine / Spearman): 0.902 /
0.896 at 3e-4 (that demo's final), 0.910 / 0.904 at 6e-4 and 0.908 / 0.900 at 1e-3
(``benchmarks/recover_plan.py --lr``)."""
BLOCK_WEIGHT = 1.0
"""Weight of the block-wise term (:mod:`.compression.training.block_targets`: every kept
transformer layer's hidden states held to the teacher's) beside the output loss. MiniLM
plans after 300 steps (``benchmarks/int8_parity.py --recover-steps 300 --block-weight``),
cosine / Spearman at weight 0 and 1: heads 1/4 + FFN 1/2 pruned, 0.8962 / 0.8978 and
0.9011 / 0.9052; layers 1 and 3 dropped, 0.9454 / 0.9163 and 0.9507 / 0.9244, in the
same time. The teacher then runs every step; without the term its outputs are kept once
computed, which saves its forward pass from the second pass over the training set on
(MiniLM: after 1,250 steps)."""
OVERHEAD_SHARE = 0.15
"""Of a run's time, what building, exporting and measuring took beside the training steps
is learned from the probes; before any probe this share of the box is held back."""


def box(seconds: float | None, budget) -> float:
    """The time box: as given, or (None) ``DEFAULT_S`` when the budget limits size, latency
    or energy (the stage exists to recover what a tight budget costs) and 0 otherwise."""
    if seconds is not None:
        return float(seconds)
    limited = any(getattr(budget, name, None) is not None
                  for name in ("max_size_bytes", "max_latency_s", "max_energy_j"))
    return DEFAULT_S if limited else 0.0


@dataclass(frozen=True)
class FinalizeConfig:
    seconds: float = DEFAULT_S
    candidates: int = 3
    batch_rows: int = 32
    threads: int = 0        # 0: every core
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


Progress = Callable[[str, float, "float | None"], None]
"""(what is running, fraction of the box used, latest quality) after each step."""


def candidates(study, budget, limit: int) -> list:
    """Complete trials within every limit but quality (distinct plans; the uncompressed
    model excluded): the best by untrained quality, then the budget seeds in the order they
    were solved (coarse plans at the budget first: shaped for the budget, heavy, and what
    recovery restores best), then the smallest."""
    from optuna.trial import TrialState

    from .budget_plans import SEEDS_ATTR
    from .search.objectives import Budget

    limits = replace(budget, min_quality=None) if isinstance(budget, Budget) else budget
    seen, fits = set(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        m = metrics_of(trial)
        plan = trial.user_attrs.get("plan", {})
        if m is None or not plan.get("units") or m.plan_digest in seen:
            continue
        if all(v <= 0 for v in limits.violations(m).values()):
            seen.add(m.plan_digest)
            fits.append((trial, m))
    by_quality = [t for t, _ in sorted(fits, key=lambda f: (-f[1].quality, f[0].number))]
    order = (study.user_attrs.get(SEEDS_ATTR) or {}).get("seed_digests", [])
    by_seed = [t for t, _ in sorted((f for f in fits if f[1].plan_digest in order),
                                    key=lambda f: order.index(f[1].plan_digest))]
    by_size = [t for t, _ in sorted(fits, key=lambda f: (f[1].size_bytes, f[0].number))]
    chosen = []
    for t in [*by_quality[:1], *by_seed, *by_size, *by_quality]:
        if len(chosen) >= limit:
            break
        if t not in chosen:
            chosen.append(t)
    return chosen


def records(study) -> tuple[dict[int, dict], dict[int, dict]]:
    """(probes, finals) stored in the study, by trial number."""
    attrs = study.user_attrs
    probes = {int(k[len(PROBE):]): v for k, v in attrs.items() if k.startswith(PROBE)}
    finals = {int(k[len(FINAL):]): v for k, v in attrs.items() if k.startswith(FINAL)}
    return probes, finals


def run(study, budget, evaluator, config: FinalizeConfig, run_dir: Path,
        progress: Progress | None = None) -> dict[int, dict]:
    """Probe the candidates, give the best the long run; the finals by trial number."""
    workload = evaluator.workload
    if config.seconds <= 0 or workload.model is None:
        return records(study)[1]
    probes, finals = records(study)
    spent = sum(r.get("seconds", 0.0) for r in [*probes.values(), *finals.values()])
    deadline = time.monotonic() + max(0.0, config.seconds - spent)
    chosen = candidates(study, budget, config.candidates)
    if not chosen:
        return finals
    box_start = time.monotonic() - spent
    probe_seconds = config.seconds * PROBE_SHARE / len(chosen)
    for trial in chosen:
        if trial.number in probes or time.monotonic() >= deadline:
            continue
        record = _train(trial, evaluator, config, probe_seconds, MIN_PROBE_STEPS,
                        evaluator.artifact_root / f"{_plan(trial).digest()}-probe.onnx",
                        _reporter(progress, f"probe of trial {trial.number}", box_start, config))
        probes[trial.number] = record
        study.set_user_attr(PROBE + str(trial.number), record)
        if progress is not None:
            progress(f"probe of trial {trial.number} done",
                     min(1.0, (time.monotonic() - box_start) / config.seconds), record["quality"])
    ranked = sorted((t for t in chosen if t.number in probes),
                    key=lambda t: (-held_quality(probes[t.number], workload), t.number))
    if not ranked or ranked[0].number in finals:
        return finals
    best = ranked[0]
    overheads = [r["seconds"] - r["steps"] * _step_seconds(r) for r in probes.values()
                 if "train_seconds" in r]
    overhead = max(overheads) if overheads else OVERHEAD_SHARE * config.seconds
    seconds = deadline - time.monotonic() - overhead
    if seconds <= 0:
        return finals
    plan = _plan(best)
    stop_at("finalize-final")
    destination = run_dir / "artifacts" / f"{plan.digest()}-final.onnx"
    probe = probes[best.number]     # its real seconds per step (varied batch lengths) bound ours
    record = _train(best, evaluator, config, seconds, MIN_FINAL_STEPS, destination,
                    _reporter(progress, f"recovery of trial {best.number}", box_start, config),
                    _step_seconds(probe))
    record["artifact"] = str(Path("artifacts") / destination.name)
    record["probe_quality"] = probes[best.number]["quality"]
    record["untrained_quality"] = metrics_of(best).quality
    finals[best.number] = record
    study.set_user_attr(FINAL + str(best.number), record)
    return finals


def held_quality(record: dict, workload) -> float:
    """What the probes are ranked by: the lowest of the quality and the workload's
    ``held_details`` (a plan whose Spearman lags its cosine ranks by its Spearman)."""
    details = record.get("quality_details") or {}
    return min([record["quality"], *(details[d] for d in workload.held_details if d in details)])


def _step_seconds(record: dict) -> float:
    """A run's seconds per training step, its start-up (building the QAT student and
    checking its mirrors) left out and counted in the overhead instead. Records from before
    ``step_seconds`` was kept: training time over steps."""
    if record.get("step_seconds"):
        return record["step_seconds"]
    return record.get("train_seconds", 0.0) / max(record.get("steps", 1), 1)


def _plan(trial) -> Plan:
    return Plan.from_dict(trial.user_attrs["plan"])


def qat_config(config: FinalizeConfig, steps: int, kind: str):
    from .compression.qat import QATConfig

    return QATConfig(steps=steps, lr=LEARNING_RATE.get(kind, 1e-3), seed=config.seed,
                     batch_rows=config.batch_rows, optimizer="adamw", schedule="one-cycle",
                     threads=config.threads, train_embeddings=True, block_weight=BLOCK_WEIGHT)


def seconds_per_step(plan: Plan, workload, config: FinalizeConfig) -> float:
    """Measured on a throwaway copy of the plan's QAT student (a few steps)."""
    from .compression.training import distill, recovery
    from .compression.qat import quantization_aware

    student, _ = quantization_aware(plan, workload)
    kind = distill.output_kind(workload)
    marks = []
    recovery.train(student, workload, qat_config(config, TIMING_STEPS + 1, kind).recovery(kind),
                   lambda step, loss: marks.append(time.perf_counter()))
    return _rate(marks) or 0.0   # the first step warms up


def _rate(marks: list[float]) -> float | None:
    """Seconds per step between the first and the last step's end (None: one step or
    none), so the first step's start-up is left out."""
    return (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) > 1 else None


def _train(trial, evaluator, config: FinalizeConfig, seconds: float, min_steps: int,
           path: Path, progress, measured_per_step: float = 0.0) -> dict:
    """One time-boxed recovery run of a trial's plan: its artifact and measured numbers.
    Steps: the box over the slower of a few timed steps and ``measured_per_step`` (a
    probe's seconds per step over all its steps: batch lengths vary, so a few steps alone
    underestimate). ``step_seconds`` records this run's own rate, start-up left out."""
    from .compression.training import distill

    workload = evaluator.workload
    plan = _plan(trial)
    began = time.perf_counter()
    per_step = max(seconds_per_step(plan, workload, config), measured_per_step)
    steps = min(MAX_STEPS, max(min_steps, int(seconds / per_step)))
    settings = qat_config(config, steps, distill.output_kind(workload))
    train_began = time.perf_counter()
    marks: list[float] = []

    def on_step(step: int, loss: float) -> None:
        marks.append(time.perf_counter())
        if progress is not None:
            progress(step, loss)

    artifact, numbers = evaluator.evaluate_qat(plan, settings, on_step, path=path)
    step_seconds = _rate(marks) or per_step
    return {"trial": trial.number, "plan_digest": plan.digest(), "steps": steps,
            "seconds_per_step": per_step, "step_seconds": step_seconds,
            "seconds": time.perf_counter() - began,
            "train_seconds": numbers["timings_s"].get("qat", time.perf_counter() - train_began),
            **numbers, "training_data": workload.training_source}


def _reporter(progress: Progress | None, what: str, box_start: float, config: FinalizeConfig):
    if progress is None:
        return None

    def on_step(step: int, loss: float) -> None:
        progress(f"{what}: step {step}, loss {loss:.4f}",
                 min(1.0, (time.monotonic() - box_start) / max(config.seconds, 1e-9)), None)

    return on_step


def final_point(trial, record: dict) -> dict:
    """A trial as a front point with its recovered numbers; the untrained ones kept beside."""
    from .report.pareto_json import point

    untrained = point(trial, None)
    out = point(trial, record["artifact"])
    target = record["target"]
    out.update(quality=record["quality"], quality_details=record["quality_details"],
               artifact_sha256=record["artifact_sha256"], size_bytes=record["size_bytes"],
               latency_s=target["latency_s"], peak_ram_bytes=target["peak_ram_bytes"],
               energy_j=target["energy_j"], host_latency_s=record["host_latency_s"],
               host_peak_ram_bytes=record.get("host_peak_ram_bytes"))
    for key in ("latency_s", "peak_ram_bytes", "energy_j"):
        out["provenance"][key] = target["provenance"][key]
    out["provenance"]["host_latency_s"] = {"kind": "measured", "device": "host",
                                           **record["host_latency"]}
    out["untrained"] = {"quality": untrained["quality"],
                        "quality_details": untrained["quality_details"],
                        "artifact_sha256": untrained["artifact_sha256"],
                        "fidelity": metrics_of(trial).fidelity}
    out["recovery"] = {k: record.get(k) for k in (
        "steps", "seconds", "train_seconds", "seconds_per_step", "step_seconds", "config",
        "training_data", "probe_quality", "final_loss")}
    return out


def merge_front(points: list[dict], finals: list[dict]) -> list[dict]:
    """The front after recovery: finals replace their untrained points, and any point a final
    now dominates (quality up, latency and size down) leaves the front. A final that lost
    quality (recovery over-fitted a small training set) is left out: the untrained point
    stays, and the final's numbers stay in the study and in pareto.json's ``finalize``."""
    finals = [f for f in finals if f["quality"] >= f["untrained"]["quality"]]
    ids = {p["id"] for p in finals}
    merged = [p for p in points if p["id"] not in ids] + list(finals)

    def dominated(a, b):    # b dominates a
        keys = (b["quality"] >= a["quality"], b["latency_s"] <= a["latency_s"],
                b["size_bytes"] <= a["size_bytes"])
        strict = (b["quality"] > a["quality"] or b["latency_s"] < a["latency_s"]
                  or b["size_bytes"] < a["size_bytes"])
        return all(keys) and strict

    return sorted((p for p in merged if not any(dominated(p, q) for q in merged if q is not p)),
                  key=lambda p: p["id"])
