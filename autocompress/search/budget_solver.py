"""Budget-directed plans: the per-layer choices that lose least quality and still fit.

A multiple-choice knapsack solved as an integer program (``scipy.optimize.milp``, as
HAWQ-V3 does for bit widths): per unit and group (one weight-storage choice and one
structural choice per unit, as in :mod:`.seeding`) at most one option; minimise the sum of
the options' measured quality drops (each at least the measurement's resolution, so no
choice is taken for nothing) subject to

- size: ``base - structural savings - format savings + overlap <= max_bytes``. A format's
  saving is per parameter of its tensor; a structural option lists the parameters it
  removes from each tensor (``removes``), and the format saving those removed parameters
  would have had is added back through the product of the two binaries, linearised
  (``w >= x + y - 1``), so a 4-bit pruned layer saves what it really saves;
- latency / energy (optional): ``base - sum(saved) <= max``, each option's saving given by
  the caller (e.g. from the primary target's cost model);
- coherence: a dropped block, or one that shares its predecessor's weights, takes no other
  choice inside it (its own tensors are gone).

What the program cannot see (graph nodes of packed formats, scales, tensors removed twice)
is caught by :func:`fit`: every solution is checked with a caller's exact
``measure(params)`` (the built artifact's size, the cost model's latency) and the limits
tightened by the overshoot until the plan fits. Plain data in and out (knob keys, Optuna
params): no model here.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import re
import sys
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from ..compression.knobs import Knob
from ..compression.plan import DROP, SHARE
from ..compression.registry import WEIGHT_KNOBS

LADDER = (1.0, 0.85, 0.7)
"""Seeds at the budget and below it (a smaller plan leaves room for what the model misses)."""
MAX_REFITS = 4
SLACK = 0.99
"""A refit aims this much further below the corrected limit."""
MIN_SHRINK = 0.5
"""A refit never more than halves a limit: where the model saw savings that barely came true
(a latency the cost model misjudges), the ratio correction alone would go below zero and
buy the most compressed plan there is."""
TIME_LIMIT_S = 5.0
MIP_GAP = 0.01
"""HiGHS stops within 1% of the optimum or after the time limit, with its best plan."""


@dataclass(frozen=True)
class Option:
    knob: Knob
    choice: object
    drop: float
    saved: Mapping[str, float]        # resource -> amount saved ("size", "latency", "energy")
    removes: Mapping[str, float] = field(default_factory=dict)
    """Structural options: parameters removed from each weight unit."""


@dataclass
class Problem:
    """Options per (unit, group), the uncompressed totals and the limits (same resources);
    ``unit_params``: parameters of each weight unit of the uncompressed model."""

    groups: dict[tuple[str, str], list[Option]] = field(default_factory=dict)
    base: dict[str, float] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    unit_params: dict[str, float] = field(default_factory=dict)
    tied: bool = False
    """Coarse plans: every unit of one kind (``layers.*.ffn``) takes the same choice (a unit
    inside a dropped block excepted: it takes none)."""
    shape: str = "per unit"
    """What :func:`budget_seeds` records: "per unit", "coarse" or "depth"."""

    def scaled(self, fraction: float) -> "Problem":
        return replace(self, limits={r: v * fraction for r, v in self.limits.items()})

    def with_limits(self, limits: Mapping[str, float]) -> "Problem":
        return replace(self, limits=dict(limits))

    def coarse(self) -> "Problem":
        """Every unit of one kind takes the same choice; depth stays. Tied, a block's drop (or
        share) would remove every block at once, and drops measured one block at a time add
        up to far less than that costs: MiniLM at 4 MB over the sampler's shaped knobs (one
        layer's drop shaped away), the tied plan dropped the other 5 of 6 layers."""
        groups = {g: [o for o in opts if o.knob.name not in (DROP, SHARE)]
                  for g, opts in self.groups.items()}
        return replace(self, tied=True, shape="coarse",
                       groups={g: opts for g, opts in groups.items() if opts})

    def depth(self) -> "Problem":
        """One weight format for everything inside the droppable blocks (and one per kind of
        unit outside them), and blocks dropped one by one as the only structure: the shape
        recovery restores best at a given speed, and the fastest (MiniLM on host, three
        layers dropped: float k and v projections beside int8 ones measured 2.85 ms, all
        int8 1.88 ms; the program prices each unit's format alone). MiniLM in w8a8cf with 8-bit tables
        (``benchmarks/int8_parity.py``): layers 1 and 3 dropped kept cosine 0.853 untrained
        and 0.951 after 300 recovery steps, a quarter of the heads and half of the FFN
        neurons pruned in every layer (about as fast) 0.614 and 0.901."""
        groups = {g: [o for o in opts if g[1] == "weight" or o.knob.name == DROP]
                  for g, opts in self.groups.items()}
        return replace(self, tied=True, shape="depth",
                       groups={g: opts for g, opts in groups.items() if opts})

    def droppable(self) -> bool:
        return any(o.knob.name == DROP for opts in self.groups.values() for o in opts)

    def to_dict(self) -> dict:
        """Plain JSON (stored with the study, so every worker repairs plans the same way)."""
        return {"base": self.base, "limits": self.limits, "unit_params": self.unit_params,
                "options": [[o.knob.key, o.choice, o.drop, dict(o.saved), group[1],
                             dict(o.removes)]
                            for group, opts in self.groups.items() for o in opts]}

    @classmethod
    def from_dict(cls, data: dict, knobs: Sequence[Knob]) -> "Problem":
        by_key = {k.key: k for k in knobs}
        problem = cls(base=dict(data["base"]), limits=dict(data["limits"]),
                      unit_params=dict(data.get("unit_params", {})))
        for key, choice, drop, saved, group, removes in data["options"]:
            knob = by_key.get(key)
            if knob is not None and choice in knob.choices:
                problem.groups.setdefault((knob.unit, group), []).append(
                    Option(knob, choice, float(drop), saved, removes))
        return problem


def build_problem(knobs: Sequence[Knob], drop: Callable, saved: Mapping[str, Callable],
                  base: Mapping[str, float], limits: Mapping[str, float],
                  removes: Callable | None = None,
                  unit_params: Mapping[str, float] | None = None) -> Problem:
    """Options of every measured choice. ``saved[resource](knob, choice)``: the saving (None:
    unknown, the option is left out when the resource is limited); ``removes(knob, choice)``:
    a structural option's parameters removed per weight unit."""
    drops = [abs(d) for k in knobs for c in k.choices[1:] if (d := drop(k, c))]
    floor = min(drops, default=1e-6) or 1e-6
    problem = Problem(base=dict(base), limits={r: float(v) for r, v in limits.items()},
                      unit_params=dict(unit_params or {}))
    for knob in knobs:
        group = (knob.unit, "weight" if knob.name in WEIGHT_KNOBS else "structure")
        for choice in knob.choices[1:]:
            d = drop(knob, choice)
            if d is None:
                continue
            savings = {}
            for resource, fn in saved.items():
                s = fn(knob, choice)
                if s is None and resource in problem.limits:
                    break
                savings[resource] = float(s or 0.0)
            else:
                gone = dict(removes(knob, choice) or {}) if removes and group[1] == "structure" else {}
                problem.groups.setdefault(group, []).append(
                    Option(knob, choice, max(float(d), floor), savings, gone))
    return problem


def solve(problem: Problem, knobs: Sequence[Knob]) -> dict | None:
    """Optuna params of the least-drop plan within the limits; None when none fits."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    identity = {k.key: k.choices[0] for k in knobs}
    if all(problem.base.get(r, 0.0) <= lim for r, lim in problem.limits.items()):
        return identity
    options = [(g, o) for g, opts in problem.groups.items() for o in opts]
    if not options:
        return None
    overlaps = _overlaps(problem, options)          # (structural i, weight j, bytes)
    n, m = len(options), len(overlaps)
    cost = np.concatenate([[o.drop for _, o in options], np.zeros(m)])
    rows, lower, upper = [], [], []

    def add(row, lo, hi):
        rows.append(row)
        lower.append(lo)
        upper.append(hi)

    for group in problem.groups:            # at most one option per (unit, group)
        add([1.0 if g == group else 0.0 for g, _ in options] + [0.0] * m, 0.0, 1.0)
    for resource, limit in problem.limits.items():
        need = problem.base.get(resource, 0.0) - limit   # savings - overlap >= need
        row = [o.saved.get(resource, 0.0) for _, o in options]
        row += [-b if resource == "size" else 0.0 for _, _, b in overlaps]
        add(row, need, np.inf)
    for k, (i, j, _) in enumerate(overlaps):          # w_k >= x_i + x_j - 1
        row = [0.0] * (n + m)
        row[i], row[j], row[n + k] = -1.0, -1.0, 1.0
        add(row, -1.0, np.inf)
    drops = {o.knob.unit: i for i, (_, o) in enumerate(options)    # block -> its drop option
             if o.knob.name == DROP and o.choice is True}
    if len(drops) > 1:          # one of the repeated blocks is kept (all dropped: no model)
        row = [0.0] * (n + m)
        for i in drops.values():
            row[i] = 1.0
        add(row, 0.0, len(drops) - 1.0)
    for block in _dropped_blocks(options):  # a dropped block takes nothing inside it
        row = [0.0] * (n + m)
        for i, (g, o) in enumerate(options):
            if o.knob.unit == block and o.knob.name in (DROP, SHARE):
                row[i] = float(n)
            elif g[0].startswith(block + "."):
                row[i] = 1.0
        add(row, 0.0, float(n))
    if problem.tied:     # x_i == x_j across the units of one kind, but in a dropped block
        for members in _kinds(options, drops if problem.shape == "depth" else ()):
            if options[members[0]][1].knob.name == DROP:
                continue                    # blocks are dropped one by one
            pairs = (itertools.permutations(members, 2) if drops     # x_i >= x_j - d(i's block)
                     else zip(members, members[1:]))                  # x_i == x_j
            for i, j in pairs:
                row = [0.0] * (n + m)
                row[i], row[j] = 1.0, -1.0
                block = _block_of(options[i][0][0], drops)
                if block is not None:
                    row[drops[block]] = 1.0
                add(row, 0.0, np.inf if drops else 0.0)
    with _quiet_stdout():
        result = milp(cost, integrality=np.concatenate([np.ones(n), np.zeros(m)]),
                      bounds=Bounds(0, 1),
                      constraints=LinearConstraint(np.array(rows), lower, upper),
                      options={"time_limit": TIME_LIMIT_S, "mip_rel_gap": MIP_GAP})
    if result.x is None:
        return None
    params = dict(identity)
    for (_, option), x in zip(options, result.x[:n]):
        if x > 0.5:
            params[option.knob.key] = option.choice
    return params


@contextlib.contextmanager
def _quiet_stdout():
    """HiGHS writes some of its internal messages to the process's stdout whatever
    ``disp`` says ("HighsMipSolverData::transformNewIntegerFeasibleSolution ..." in the
    middle of a search's terminal output): file descriptor 1 goes to /dev/null meanwhile."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:             # no descriptor 1 to save: nothing to quiet
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _overlaps(problem: Problem, options) -> list[tuple[int, int, float]]:
    """(option i, option j, bytes counted twice if both are taken): a weight format's saving
    on parameters a structural option removes; and two structural options of different
    units removing from one tensor (fractions multiply: ``n (1 - a)(1 - b)`` remain, so
    ``a b n`` parameters were subtracted twice)."""
    weights: dict[str, list[tuple[int, float]]] = {}
    structural: dict[str, list[tuple[int, str, float]]] = {}
    for j, (g, o) in enumerate(options):
        full = problem.unit_params.get(g[0])
        if g[1] == "weight" and full:
            weights.setdefault(g[0], []).append((j, o.saved.get("size", 0.0) / full))
        for unit, removed in o.removes.items():
            if removed > 0:
                structural.setdefault(unit, []).append((j, g[0], removed))
    out = []
    for i, (g, o) in enumerate(options):
        for unit, removed in o.removes.items():
            for j, per_param in weights.get(unit, ()):
                if removed > 0 and per_param > 0:
                    out.append((i, j, removed * per_param))
    for unit, removals in structural.items():
        n = problem.unit_params.get(unit)
        if not n:
            continue
        for a, (i, group_i, r_i) in enumerate(removals):
            for j, group_j, r_j in removals[a + 1:]:
                if group_i != group_j:
                    out.append((i, j, 4.0 * r_i * r_j / n))
    return out


def kind_of(unit: str) -> str:
    """A unit's kind: its name with layer indices starred (``layers.3.ffn`` -> ``layers.*.ffn``)."""
    return re.sub(r"\.\d+(?=\.|$)", ".*", unit)


def _kinds(options, blocks=()) -> list[list[int]]:
    """Indices of the same knob and choice on every unit of one kind (two or more units);
    units inside any of ``blocks`` are all of one kind."""
    by_kind: dict[tuple, list[int]] = {}
    for i, (_, o) in enumerate(options):
        kind = "blocks" if _block_of(o.knob.unit, blocks) else kind_of(o.knob.unit)
        key = (kind, o.knob.name, repr(o.choice))
        by_kind.setdefault(key, []).append(i)
    return [members for members in by_kind.values() if len(members) > 1]


def _block_of(unit: str, blocks) -> str | None:
    return next((b for b in blocks if unit.startswith(b + ".")), None)


def _dropped_blocks(options) -> list[str]:
    """Blocks a choice removes (dropped) or discards (sharing its predecessor's weights)."""
    return sorted({o.knob.unit for _, o in options
                   if o.knob.name in (DROP, SHARE) and o.choice is True})


TOTAL = ""
"""Key of ``weights_after``'s count of every parameter of the model."""
ROUNDS = 3


def alternate(problem: Problem, knobs: Sequence[Knob], weights_after: Callable,
              rounds: int = ROUNDS, start: str = "best") -> dict | None:
    """The joint program split in two knapsacks without products, solved in turn: formats
    for a given structure (exact: ``weights_after`` counts the parameters each tensor keeps),
    then structure for the bytes per parameter those formats store, and again. Large models
    make the joint program's products too slow for the solver; each knapsack here takes
    well under a second. ``start``: "best" (see below) or :data:`FLOAT_START`."""
    weight_groups = _weight_groups(problem)
    full = weights_after({k.key: k.choices[0] for k in knobs})
    identity = {k.key: k.choices[0] for k in knobs}
    formats = solve(replace(problem, groups=weight_groups), knobs)
    if formats is not None:
        return _alternate_from(formats, problem, knobs, weights_after, rounds, full)
    if start == FLOAT_START:
        return _alternate_from(identity, problem, knobs, weights_after, rounds, full)
    # formats alone cannot fit: starting from float weights, the first structure step prunes
    # as if every weight stayed float (digits-cnn at 30 kB: 75% of every channel group
    # pruned, weights left float). Start also from the most compressing formats, whose
    # structure step prunes least, and keep the plan that loses least.
    smallest = dict(identity)
    for opts in weight_groups.values():
        top = max(opts, key=lambda o: (_share_of_limits(o, problem), -o.drop))
        smallest[top.knob.key] = top.choice
    found = [p for begin in (identity, smallest)
             if (p := _alternate_from(begin, problem, knobs, weights_after, rounds, full))]
    return min(found, key=lambda p: total_drop(p, problem)) if found else None


def _share_of_limits(option: Option, problem: Problem) -> float:
    """What an option saves of the limited resources, each as a share of its limit (under a
    size budget the most compressing format; under a latency limit the fastest)."""
    return sum(option.saved.get(r, 0.0) / limit for r, limit in problem.limits.items()
               if limit > 0)


def _weight_groups(problem: Problem) -> dict:
    return {g: o for g, o in problem.groups.items() if g[1] == "weight"}


def formats_fit(problem: Problem, knobs: Sequence[Knob]) -> bool:
    """Whether weight formats alone meet the limits (then every start begins from them)."""
    return solve(replace(problem, groups=_weight_groups(problem)), knobs) is not None


FLOAT_START = "float"
"""``alternate(start=...)``: only from float weights (a heavier structure: fewer parameters
to train, so more recovery steps in a time box). Budget seeds take both; on digits-cnn at
30 kB the least-drop plan recovered better (0.9889 against 0.9489), on MiniLM at 4 MB the
two starts gave the same plan (stop 23)."""


def total_drop(params: dict, problem: Problem) -> float:
    """The program's objective for ``params``: the sum of the chosen options' drops."""
    return sum(o.drop for opts in problem.groups.values() for o in opts
               if params.get(o.knob.key) == o.choice)


def _alternate_from(formats: dict, problem: Problem, knobs, weights_after, rounds: int,
                    full: dict) -> dict | None:
    weight_groups = _weight_groups(problem)
    structure_groups = {g: o for g, o in problem.groups.items() if g[1] == "structure"}
    identity = {k.key: k.choices[0] for k in knobs}
    best = None
    for _ in range(rounds):
        per_param = _bytes_per_param(problem, formats)
        saving = {u: n * (4.0 - per_param.get(u, 4.0)) for u, n in problem.unit_params.items()}
        base = dict(problem.base)
        base["size"] = base.get("size", 0.0) - sum(saving.values())
        _less_timed_savings(base, weight_groups, formats)   # the formats' savings stand
        # a structure removes its share of what is left of the time, not of the float model's
        left = {r: max(0.0, base[r] / problem.base[r]) for r in base
                if r != "size" and problem.base.get(r, 0.0) > 0}
        groups = {g: [Option(o.knob, o.choice, o.drop,
                             {**{r: v * left.get(r, 1.0) for r, v in o.saved.items()},
                              "size": sum(r * per_param.get(u, 4.0)
                                          for u, r in o.removes.items())
                              if o.removes else o.saved.get("size", 0.0)})
                      for o in opts] for g, opts in structure_groups.items()}
        structure = solve(replace(problem, groups=groups, base=base), knobs)
        if structure is None:
            break
        after = weights_after(structure)
        pinned = {k: v for k, v in structure.items() if v != identity[k]}
        base = dict(problem.base)
        base["size"] = problem.base["size"] - 4.0 * (full[TOTAL] - after[TOTAL])
        _less_timed_savings(base, structure_groups, pinned)
        kept = {g: after.get(g[0], 0.0) / full[g[0]] if full.get(g[0]) else 0.0
                for g in weight_groups}       # a format saves on the parameters left
        groups = {g: [Option(o.knob, o.choice, o.drop,
                             {r: v * kept[g] for r, v in o.saved.items()})
                      for o in opts] for g, opts in weight_groups.items()}
        chosen = solve(replace(problem, groups=groups, base=base), knobs)
        if chosen is None:
            break
        formats = chosen
        best = {**chosen, **pinned}
    return best


def _less_timed_savings(base: dict, groups: dict, params: dict) -> None:
    """Take from ``base`` the latency / energy savings of the options ``params`` chooses in
    ``groups`` (size is counted per parameter by the caller)."""
    for opts in groups.values():
        for o in opts:
            if params.get(o.knob.key) == o.choice:
                for r, v in o.saved.items():
                    if r != "size":
                        base[r] = base.get(r, 0.0) - v


def _bytes_per_param(problem: Problem, params: dict) -> dict[str, float]:
    out = {}
    for (unit, kind), opts in problem.groups.items():
        n = problem.unit_params.get(unit)
        if kind != "weight" or not n:
            continue
        for o in opts:
            if params.get(o.knob.key) == o.choice:
                out[unit] = max(0.0, 4.0 - o.saved.get("size", 0.0) / n)
    return out


def fit(problem: Problem, knobs: Sequence[Knob],
        measure: Callable[[dict], Mapping[str, float]] | None = None,
        weights_after: Callable | None = None, start: str = "best") -> tuple[dict | None, dict]:
    """Solve (jointly, or by :func:`alternate` given ``weights_after``), then check the plan
    with ``measure`` (exact numbers per limited resource) and tighten each overshot limit
    until the measured plan fits (at most ``MAX_REFITS``). Returns (params or None, a record
    of the attempts)."""
    wanted = dict(problem.limits)
    limits = dict(wanted)
    attempts = []
    for _ in range(MAX_REFITS + 1):
        scaled = problem.with_limits(limits)
        params = (alternate(scaled, knobs, weights_after, start=start) if weights_after is not None
                  else solve(scaled, knobs))
        if params is None:
            attempts.append({"limits": dict(limits), "result": "no plan within the limits"})
            return None, {"attempts": attempts}
        measured = dict(measure(params)) if measure is not None else {}
        attempts.append({"limits": dict(limits), "measured": measured})
        over = {r: measured[r] / wanted[r] for r in wanted
                if r in measured and measured[r] > wanted[r]}
        if not over:
            return params, {"attempts": attempts}
        model = estimate(params, problem)
        for resource in over:       # the model saw savings that were not all there
            base = problem.base.get(resource, 0.0)
            modelled, real = base - model.get(resource, base), base - measured[resource]
            ratio = min(1.0, real / modelled) if modelled > 0 and real > 0 else 0.5
            missed = measured[resource] - wanted[resource]
            limits[resource] = max(SLACK * min(base - (base - limits[resource]) / ratio,
                                               limits[resource] - missed),
                                   MIN_SHRINK * limits[resource])
    return None, {"attempts": attempts}


TIMED = ("latency", "energy")


def budget_seeds(problem: Problem, knobs: Sequence[Knob], measure=None,
                 ladder: Sequence[float] = LADDER,
                 weights_after: Callable | None = None) -> tuple[list[dict], list[dict]]:
    """Seeds at each fraction of the limits, coarse (one choice per kind of unit: the regular
    shapes recovery training restores best) then per unit (duplicates removed); and what
    each attempt was. Under a latency or energy limit the uncompressed model misses, a depth
    plan (:meth:`Problem.depth`) comes first: speed is bought best by whole blocks. At the budget itself the coarse plan is also solved from float
    weights (:data:`FLOAT_START`) when the formats alone cannot fit: which of the two
    recovers more is for the finalize stage's probes to find."""
    seeds, records = [], []
    timed = any(problem.base.get(r, 0.0) > limit for r, limit in problem.limits.items()
                if r in TIMED)             # a latency or energy limit the model misses
    for fraction in ladder:
        coarse = problem.coarse()
        starts = [(coarse, "best")]
        if weights_after is not None and fraction == ladder[0] and \
                not formats_fit(coarse.scaled(fraction), knobs):
            starts.append((coarse, FLOAT_START))
        if timed and problem.droppable():
            starts.insert(0, (problem.depth(), "best"))
        for shape, start in [*starts, (problem, "best")]:
            # depth: formats inside a dropped block are gone, so nothing overlaps and the
            # joint program is exact (and small); split, the format step would price the
            # drops at their float saving and keep slow formats on the blocks left
            split = weights_after if shape.shape != "depth" else None
            params, record = fit(shape.scaled(fraction), knobs, measure, split, start)
            records.append({"fraction": fraction, "shape": shape.shape,
                            "coarse": shape.tied, "start": start,
                            **record, "found": params is not None})
            if params is not None and params not in seeds:
                seeds.append(params)
    return seeds, records


def estimate(params: dict, problem: Problem) -> dict[str, float]:
    """The program's totals for ``params`` (its model, not a measurement)."""
    chosen = [o for opts in problem.groups.values() for o in opts
              if params.get(o.knob.key) == o.choice]
    totals = dict(problem.base)
    for o in chosen:
        for r, s in o.saved.items():
            totals[r] = totals.get(r, 0.0) - s
    options = [((o.knob.unit, "weight" if o.knob.name in WEIGHT_KNOBS else "structure"), o)
               for o in chosen]
    for _, _, bytes_ in _overlaps(problem, options):
        totals["size"] = totals.get("size", 0.0) + bytes_
    return totals


def repair(params: dict, problem: Problem, knobs: Sequence[Knob]) -> dict | None:
    """A sampled plan that cannot fit (by the program's estimate), moved to the nearest plan
    that does: keeping a sampled choice costs almost nothing, any other choice its drop plus
    one resolution unit. None when it fits already or nothing fits."""
    totals = estimate(params, problem)
    if all(totals.get(r, 0.0) <= lim for r, lim in problem.limits.items()):
        return None
    floor = min((o.drop for opts in problem.groups.values() for o in opts), default=1e-6)
    biased = problem.with_limits(problem.limits)
    biased.groups = {group: [Option(o.knob, o.choice,
                                    floor * 1e-3 if params.get(o.knob.key) == o.choice
                                    else o.drop + floor, o.saved, o.removes) for o in opts]
                     for group, opts in problem.groups.items()}
    return solve(biased, knobs)
