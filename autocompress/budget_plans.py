"""Budget-directed seeds and repair for one search: the integer program of
:mod:`search.budget_solver` fed with this model's sensitivity and checked on real builds.

Sizes are the built artifact's file size; latency and energy the primary target's cost
model on the built graph (the numbers the constraint will see, predicted before any
measurement), the host's latency measured as every host trial's is. The solver's per-option savings are estimates:

- size: the sensitivity's bytes saved by each choice alone;
- latency / energy: a structural choice saves the target's uncompressed latency times the
  fraction of compute-layer bytes it removes; a weight format on a unit saves what the
  primary target's cost model predicts the uniform plan of that format saves, shared by
  the parameters of the units it covers (:func:`_format_savings`: whether an int8 kernel
  is faster, or a packed format slower, depends on the target);

and every solution is built and checked, the limits tightened where a check overshoots.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from functools import partial

from .compression.plan import QUANT, Plan
from .compression.registry import WEIGHT_KNOBS
from .search import budget_solver
from .search.space import params_to_plan

SEEDS_ATTR = "budget_seeds"
"""Study attr: the record of the budget seeds (pareto.json ``study.budget_seeds``)."""


@dataclass
class BudgetPlans:
    """What the search needs: seed params, a repair function and the record for pareto.json."""

    seeds: list
    problem: budget_solver.Problem | None
    record: dict

    def repair(self, params: dict, knobs) -> dict | None:
        if self.problem is None:
            return None
        return budget_solver.repair(params, self.problem, knobs)


def limits_of(budget) -> dict:
    limits = {}
    if budget.max_size_bytes is not None:
        limits["size"] = float(budget.max_size_bytes)
    if budget.max_latency_s is not None:
        limits["latency"] = float(budget.max_latency_s)
    if budget.max_energy_j is not None:
        limits["energy"] = float(budget.max_energy_j)
    return limits


def plan_of(params: dict, knobs, contained=frozenset()) -> Plan:
    from .compression.structural.precedence import coherent

    return coherent(params_to_plan(params, knobs), contained)


def directed(knobs, analysis, budget, evaluator, distilled: bool = True) -> BudgetPlans:
    """Seeds at the budget and below it, and the problem that repairs sampled plans.
    ``distilled``: each seed is also queued with the most distillation the space offers
    (without a finalize stage, the only recovery training a seed gets)."""
    limits = limits_of(budget)
    if not limits or analysis is None:
        return BudgetPlans([], None, {})
    start = time.perf_counter()
    base_plan = Plan()
    clock = HostClock.of(evaluator) if "latency" in limits else None
    base = _numbers(evaluator, base_plan)
    if clock is not None:       # timed once, by the clock: not again beside itself
        base["latency"] = clock.uncompressed_s
    gather = {k.unit for k in knobs if k.name == "quant" and "w8a8" not in k.choices}
    sizes = _workload_unit_params(evaluator.workload, knobs)
    compute_bytes = 4.0 * sum(n for u, n in sizes.items() if u not in gather) or 1.0

    def compute_share(knob, choice):
        if knob.name in WEIGHT_KNOBS or knob.unit in gather or knob.unit.startswith("embeddings"):
            return 0.0
        s = analysis.saved_bytes(knob, choice)
        return None if s is None else max(s, 0.0) / compute_bytes

    timed = [r for r in ("latency", "energy") if r in limits]
    formats = (_format_savings(evaluator, knobs, base, sizes, timed, clock, gather)
               if timed else {})

    def saves(knob, choice, resource):
        if knob.name == QUANT:
            return formats.get((knob.unit, choice), {}).get(resource, 0.0)
        share = compute_share(knob, choice)
        return None if share is None else share * base[resource]

    saved = {"size": analysis.saved_bytes, **{r: partial(saves, resource=r) for r in timed}}
    problem = budget_solver.build_problem(knobs, analysis.drop, saved, base, limits,
                                          _removals(evaluator.workload, knobs, sizes, analysis),
                                          sizes)

    from .compression.structural.precedence import contained_units

    contained = (contained_units(evaluator.workload.model) if evaluator.workload.model is not None
                 else frozenset())

    def measure(params):
        return _numbers(evaluator, plan_of(params, knobs, contained), clock)

    seeds, records = budget_solver.budget_seeds(
        problem, knobs, measure, weights_after=_weights_after(evaluator.workload, knobs, sizes,
                                                              contained))
    uniform = _uniform_within(problem, knobs, seeds)
    recovery = next((k for k in knobs if k.name == "distill_steps"), None)
    queued = uniform + list(seeds)
    if distilled and recovery is not None:
        queued += [{**s, recovery.key: max(recovery.choices)} for s in seeds]
    record = {"limits": limits, "uncompressed": base, "ladder": list(budget_solver.LADDER),
              "solutions": records, "n_seeds": len(queued),
              "seed_digests": [plan_of(s, knobs, contained).digest() for s in seeds],
              "uniform_within": len(uniform),
              "format_savings": _format_record(formats),
              "host_clock": clock is not None,
              "seconds": round(time.perf_counter() - start, 2),
              "method": "scipy.optimize.milp multiple-choice knapsack over the sensitivity "
                        "table; each solution built and checked, limits tightened on overshoot"}
    return BudgetPlans(queued, problem, record)


def _format_savings(evaluator, knobs, base: dict, sizes: dict, resources,
                    clock: "HostClock | None" = None, gather=frozenset()) -> dict:
    """(unit, format) -> {resource: amount saved}: each weight format's uniform plan (every
    unit offering it) built and predicted on the primary target, its saving over the
    uncompressed model shared by the parameters of the units that compute with their
    weights (``gather``: tables only looked up, which save no time; shared among them only
    where a format is offered nowhere else). Negative where the format is slower (a packed
    format rebuilt to float at load). MiniLM's 8-bit tables had taken half of w8's saving
    on host, and a depth plan with them measured 0.9 ms over what the program expected."""
    quant = [k for k in knobs if k.name == QUANT]
    formats = sorted({c for k in quant for c in k.choices[1:]}, key=str)
    out = {}
    for choice in formats:
        units = [k.unit for k in quant if choice in k.choices]
        numbers = _numbers(evaluator, Plan({u: {QUANT: choice} for u in units}), clock)
        computing = [u for u in units if u not in gather] or units
        total = sum(sizes.get(u, 0.0) for u in computing) or 1.0
        for u in units:
            share = sizes.get(u, 0.0) / total if u in computing else 0.0
            out[(u, choice)] = {r: (base[r] - numbers[r]) * share for r in resources}
    return out


def _format_record(formats: dict) -> dict:
    """Each format's total saving per resource (pareto.json ``study.budget_seeds``)."""
    totals: dict = {}
    for (_, choice), saved in formats.items():
        entry = totals.setdefault(str(choice), {})
        for resource, amount in saved.items():
            entry[resource] = entry.get(resource, 0.0) + amount
    return {c: {r: float(f"{v:.6g}") for r, v in e.items()} for c, e in totals.items()}


def _uniform_within(problem, knobs, seeds: list) -> list[dict]:
    """The uniform quantization anchors the program says fit the limits, to run before the
    seeds: the low-risk plan (digits-cnn at 100 kB: every weight int8, 0.9933) otherwise
    waits behind the seeds and a short search never reaches it."""
    from .search.space import anchor_params

    out = []
    for params in anchor_params(knobs)[2:]:
        totals = budget_solver.estimate(params, problem)
        if params not in seeds and all(totals.get(r, 0.0) <= limit
                                       for r, limit in problem.limits.items()):
            out.append(params)
    return out


def _workload_unit_params(workload, knobs) -> dict[str, float]:
    """:func:`_unit_params` of the workload's model; an ONNX file's units are its weights."""
    if workload.model is not None:
        return _unit_params(workload.model, knobs)
    return {u: n for u, n in _onnx_params(workload).items() if u != budget_solver.TOTAL}


def _onnx_params(workload) -> dict[str, float]:
    """An ONNX file's weights' sizes, and (key ``budget_solver.TOTAL``) every initializer's."""
    from math import prod

    import onnx

    from .compression.weights.onnx_graph import weights
    from .compression.weights.quantize import to_opset

    model = to_opset(onnx.load(str(workload.onnx_path)))
    out = {name: float(prod(shape)) for name, (_, shape) in weights(model).items()}
    out[budget_solver.TOTAL] = float(sum(prod(i.dims) for i in model.graph.initializer))
    return out


def _unit_params(model, knobs) -> dict[str, float]:
    """Parameters of each weight unit (the module a weight knob names) in ``model``."""
    modules = dict(model.named_modules())
    units = sorted({k.unit for k in knobs if k.name in WEIGHT_KNOBS})
    return {u: float(sum(p.numel() for p in modules[u].parameters())) if u in modules else 0.0
            for u in units}


def _removals(workload, knobs, sizes: dict, analysis):
    """``removes(knob, choice)``: parameters a structural choice alone removes from each
    weight unit. A unit's own factorisation removes from itself, a dropped block everything
    inside it, a pruned attention / FFN module from its layers in proportion to their size;
    anything else (a channel group coupling several layers) is built once and counted."""
    from .compression.apply import compress_torch
    from .compression.plan import DROP, RANK_RATIO

    def removes(knob, choice) -> dict:
        saved = analysis.saved_bytes(knob, choice) or 0.0
        inside = {u: n for u, n in sizes.items() if u.startswith(knob.unit + ".")}
        if knob.unit in sizes and knob.name == RANK_RATIO:
            return {knob.unit: min(sizes[knob.unit], saved / 4.0)}
        if knob.name == DROP:
            return dict(inside)
        if inside:
            total = sum(inside.values()) or 1.0
            return {u: min(n, saved / 4.0 * n / total) for u, n in inside.items()}
        try:
            model = compress_torch(Plan({knob.unit: {knob.name: choice}}), workload)
        except Exception:     # a choice that cannot apply alone removes nothing we can count
            return {}
        after = _unit_params(model, knobs)
        return {u: sizes[u] - after.get(u, 0.0) for u in sizes if sizes[u] > after.get(u, 0.0)}

    return removes


class HostClock:
    """The host's latency of a plan as the search's limits will see it, held steady: each
    plan timed in turn with the uncompressed model, its latency that ratio times the
    uncompressed model's at the start. This machine's speed swings (up to 1.7x between
    moments): timed alone, seeds measured in a slow moment made every refit halve the limit
    it aimed at (MiniLM at 2.8 ms, stop 28) and no seed fit."""

    ROUNDS = 5

    def __init__(self, evaluator, reference_path):
        from .backends import ort_runner

        self._timing, self._example = evaluator.timing, evaluator.workload.example
        self._reference = ort_runner.make_session(reference_path, self._timing.threads)
        self.uncompressed_s = statistics.median(
            ort_runner.measure_latency(self._reference, self._example, self._timing).median_s
            for _ in range(self.ROUNDS))

    @classmethod
    def of(cls, evaluator) -> "HostClock | None":
        """A clock where the host's latency is measured (a host target, cost not predicted)."""
        if evaluator.profile.name != "host" or evaluator.cost == "predicted":
            return None
        from .compression.apply import apply_plan

        return cls(evaluator, apply_plan(Plan(), evaluator.workload,
                                         evaluator.artifact_path(Plan())).path)

    def latency(self, path) -> float:
        from .backends import ort_runner

        session = ort_runner.make_session(path, self._timing.threads)
        return self.uncompressed_s * ort_runner.relative_latency(
            session, self._reference, self._example, self._timing, self.ROUNDS)


def _numbers(evaluator, plan: Plan, clock: HostClock | None = None) -> dict:
    """Size of the built artifact and the primary target's latency and energy as the
    search's limits will see them: predicted by its cost model, except the host's latency,
    which every trial measures with ONNX Runtime (unless ``--cost predicted``) and so is
    measured here too (``clock``) when a latency limit needs it: this cache's host model
    put MiniLM's plans at 10-18 ms where they measured 3-5 ms, and no seed fit."""
    from .compression.apply import apply_plan
    from .cost_models.layers import describe

    artifact = apply_plan(plan, evaluator.workload, evaluator.artifact_path(plan))
    prediction = evaluator.cost_model.predict(describe(artifact.path, evaluator.latency_shapes))
    latency = float(prediction.latency_s) if clock is None else clock.latency(artifact.path)
    return {"size": float(artifact.size_bytes), "latency": float(latency),
            "energy": float(prediction.energy_j)}


def plan_params(plan: Plan, knobs) -> dict:
    """A plan as Optuna params over ``knobs`` (knobs it does not set: their first choice)."""
    return {k.key: plan.get(k.unit, k.name, k.choices[0]) for k in knobs}


PROBLEM_ATTR = "budget_problem"


def refiner(study, knobs, workload):
    """What every trial's sampled plan becomes before it is built: repaired to fit the budget
    (when the study holds a budget problem and the plan cannot fit by its estimate), then
    made coherent (no knob inside a dropped block). Returns (plan, attrs to record)."""
    from .compression.structural.precedence import coherent, contained_units

    data = study.user_attrs.get(PROBLEM_ATTR)
    problem = budget_solver.Problem.from_dict(data, knobs) if data else None
    contained = contained_units(workload.model) if workload.model is not None else frozenset()

    def refine(plan: Plan, sampled: bool = True) -> tuple[Plan, dict]:
        info = {}
        if problem is not None and sampled:
            params = plan_params(plan, knobs)
            fixed = budget_solver.repair(params, problem, knobs)
            if fixed is not None and fixed != params:
                info["repaired_from"] = plan.to_dict()
                plan = params_to_plan(fixed, knobs)
        if workload.model is not None:
            applied = coherent(plan, contained)
            if applied != plan:
                info["sampled_plan"] = plan.to_dict()
            plan = applied
        return plan, info

    return refine


def _weights_after(workload, knobs, sizes: dict, contained):
    """Parameters each weight unit keeps under a plan's structural choices (and the model's
    total, key ``budget_solver.TOTAL``): the torch stage built once per structure."""
    from .compression.apply import compress_torch

    if workload.model is None:       # no structural knobs: every plan keeps every weight
        kept = _onnx_params(workload)
        return lambda params: kept
    memo: dict[str, dict] = {}

    def count(params: dict) -> dict:
        plan = plan_of(params, knobs, contained)
        structure = Plan({u: {k: v for k, v in ks.items() if k not in WEIGHT_KNOBS}
                          for u, ks in plan.units.items()
                          if any(k not in WEIGHT_KNOBS for k in ks)})
        key = structure.digest()
        if key not in memo:
            model = compress_torch(structure, workload)
            memo[key] = _unit_params(model, knobs)
            memo[key][budget_solver.TOTAL] = float(sum(p.numel() for p in model.parameters()))
        return memo[key]

    return count


def widen(shaped, full, seeds: list[dict]) -> list:
    """The sampler's knobs (catastrophic choices removed) plus every choice a budget seed
    takes: a tight budget may need a choice that alone costs much (recovery training gets
    it back), and an enqueued plan must lie inside the space."""
    from dataclasses import replace

    by_key = {k.key: k for k in shaped}
    used: dict[str, set] = {}
    for params in seeds:
        for key, value in params.items():
            used.setdefault(key, set()).add(json_key(value))
    out = []
    for knob in full:
        have = by_key.get(knob.key)
        keep = [c for c in knob.choices
                if (have is not None and c in have.choices) or json_key(c) in used.get(knob.key, ())
                or c == knob.choices[0]]
        if len(keep) > 1:
            out.append(replace(knob, choices=tuple(keep)))
    return out


def json_key(value) -> str:
    import json

    return json.dumps(value)
