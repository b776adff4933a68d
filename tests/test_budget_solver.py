"""The budget solver: plans that meet the budget by its model, exact on a small instance,
coherent around dropped blocks, and repairs that move a sampled plan inside the budget."""
import itertools

import pytest

from autocompress.compression.knobs import Knob
from autocompress.search import budget_solver
from autocompress.search.budget_solver import Option, Problem, estimate, repair, solve


def small_instance():
    """Two layers with a weight format each and one with a structural choice."""
    knobs = [Knob("a", "quant", ("float", "w8", "w4"), "q"),
             Knob("b", "quant", ("float", "w8", "w4"), "q"),
             Knob("b", "rank_ratio", (1.0, 0.5), "lr")]
    drops = {("a", "w8"): 0.01, ("a", "w4"): 0.05, ("b", "w8"): 0.02, ("b", "w4"): 0.03,
             ("b", 0.5): 0.04}
    saved = {("a", "w8"): 300.0, ("a", "w4"): 350.0, ("b", "w8"): 600.0, ("b", "w4"): 700.0,
             ("b", 0.5): 400.0}
    removes = {("b", 0.5): {"b": 100.0}}
    problem = budget_solver.build_problem(
        knobs, lambda k, c: drops.get((k.unit, c)), {"size": lambda k, c: saved.get((k.unit, c))},
        {"size": 1300.0}, {"size": 800.0},
        lambda k, c: removes.get((k.unit, c)), {"a": 100.0, "b": 200.0})
    return knobs, problem


def true_size(params):
    """The instance's exact size: 4 bytes per float, 1 per w8, 0.5 per w4, + 100 overhead."""
    per = {"float": 4.0, "w8": 1.0, "w4": 0.5}
    n_b = 100.0 if params["b:rank_ratio"] == 0.5 else 200.0
    return 100 + 100 * per[params["a:quant"]] + n_b * per[params["b:quant"]]


def test_the_instance_model_is_the_true_size():
    knobs, problem = small_instance()
    for values in itertools.product(*(k.choices for k in knobs)):
        params = {k.key: v for k, v in zip(knobs, values)}
        assert estimate(params, problem)["size"] == pytest.approx(true_size(params))


@pytest.mark.parametrize("limit", [1300.0, 800.0, 500.0, 350.0, 250.0, 200.0])
def test_solution_is_the_exhaustive_optimum(limit):
    knobs, problem = small_instance()
    problem = problem.with_limits({"size": limit})
    drops = {o.knob.key + str(o.choice): o.drop for opts in problem.groups.values() for o in opts}
    best = None
    for values in itertools.product(*(k.choices for k in knobs)):
        params = {k.key: v for k, v in zip(knobs, values)}
        if true_size(params) <= limit:
            cost = sum(drops.get(k + str(v), 0.0) for k, v in params.items())
            best = cost if best is None else min(best, cost)
    found = solve(problem, knobs)
    if best is None:
        assert found is None
        return
    assert true_size(found) <= limit
    cost = sum(drops.get(k + str(v), 0.0) for k, v in found.items())
    assert cost == pytest.approx(best)


def test_fit_tightens_until_the_measured_plan_fits():
    """The measurement sees 60 bytes the model does not (graph nodes of packed formats):
    the refit lowers the limit until the measured plan is within the budget."""
    knobs, problem = small_instance()
    problem = problem.with_limits({"size": 400.0})
    params, record = budget_solver.fit(problem, knobs, lambda p: {"size": true_size(p) + 60})
    assert params is not None and true_size(params) + 60 <= 400.0
    assert len(record["attempts"]) >= 2


def test_an_unreachable_budget_gives_no_plan():
    knobs, problem = small_instance()
    params, record = budget_solver.fit(problem.with_limits({"size": 100.0}), knobs,
                                       lambda p: {"size": true_size(p)})
    assert params is None and record["attempts"][-1]["result"] == "no plan within the limits"


def test_a_dropped_block_takes_nothing_inside_it():
    knobs = [Knob("blk", "drop", (False, True), "depth"),
             Knob("blk.fc", "quant", ("float", "w4"), "q"),
             Knob("other", "quant", ("float", "w4"), "q")]
    problem = Problem(base={"size": 1000.0}, limits={"size": 250.0},
                      unit_params={"blk.fc": 100.0, "other": 100.0})
    problem.groups = {
        ("blk", "structure"): [Option(knobs[0], True, 0.01, {"size": 500.0}, {"blk.fc": 100.0})],
        ("blk.fc", "weight"): [Option(knobs[1], "w4", 0.001, {"size": 350.0})],
        ("other", "weight"): [Option(knobs[2], "w4", 0.001, {"size": 350.0})]}
    params = solve(problem, knobs)
    assert params["blk:drop"] is True and params["blk.fc:quant"] == "float"


def test_repair_keeps_what_fits_and_moves_the_rest():
    knobs, problem = small_instance()
    sampled = {"a:quant": "w8", "b:quant": "float", "b:rank_ratio": 1.0}   # 100 + 100 + 800
    fixed = repair(sampled, problem.with_limits({"size": 500.0}), knobs)
    assert fixed is not None and true_size(fixed) <= 500.0
    assert fixed["a:quant"] == "w8"                     # the sampled choice that helps stays
    assert repair({"a:quant": "w4", "b:quant": "w4", "b:rank_ratio": 1.0},
                  problem.with_limits({"size": 500.0}), knobs) is None   # fits: left alone


def test_problem_round_trips_through_json():
    import json

    knobs, problem = small_instance()
    again = Problem.from_dict(json.loads(json.dumps(problem.to_dict())), knobs)
    params = {"a:quant": "w4", "b:quant": "w8", "b:rank_ratio": 0.5}
    assert estimate(params, again) == estimate(params, problem)


def layered_instance():
    """Three layers of one kind (``layers.N.fc``), each with a format; layer 1 is the
    least sensitive, so the per-unit optimum compresses it alone."""
    knobs = [Knob(f"layers.{i}.fc", "quant", ("float", "w8", "w4"), "q") for i in range(3)]
    drops = {0: (0.02, 0.05), 1: (0.001, 0.002), 2: (0.02, 0.05)}
    choice_drop = {(f"layers.{i}.fc", c): d[j] for i, d in drops.items()
                   for j, c in enumerate(("w8", "w4"))}
    saved = {"w8": 300.0, "w4": 350.0}
    problem = budget_solver.build_problem(
        knobs, lambda k, c: choice_drop.get((k.unit, c)), {"size": lambda k, c: saved.get(c)},
        {"size": 1300.0}, {"size": 950.0}, None, {k.unit: 100.0 for k in knobs})
    return knobs, problem


def test_coarse_plans_give_every_unit_of_a_kind_one_choice():
    knobs, problem = layered_instance()
    fine = solve(problem, knobs)
    assert sorted(fine.values()) == ["float", "float", "w4"]      # one layer takes it all
    coarse = solve(problem.coarse(), knobs)
    assert len(set(coarse.values())) == 1 and coarse["layers.0.fc:quant"] != "float"
    assert estimate(coarse, problem)["size"] <= 950.0
    assert budget_solver.kind_of("layers.12.attention.q") == "layers.*.attention.q"


def test_coarse_plans_keep_every_block():
    """Three blocks, each droppable (drop measured alone: tiny) or 4-bit. Per unit, dropping
    two blocks is the least summed drop; tied, a drop would remove all three at once, which
    one-at-a-time drops cannot price: the coarse plan keeps depth and stores 4-bit weights."""
    blocks = [f"layers.{i}" for i in range(3)]
    knobs = [Knob(b, "drop", (False, True), "d") for b in blocks] + \
        [Knob(b + ".fc", "quant", ("float", "w4"), "q") for b in blocks]
    problem = budget_solver.build_problem(
        knobs, lambda k, c: 0.001 if k.name == "drop" else 0.01,
        {"size": lambda k, c: 400.0 if k.name == "drop" else 350.0},
        {"size": 1300.0}, {"size": 500.0}, lambda k, c: {k.unit + ".fc": 100.0},
        {b + ".fc": 100.0 for b in blocks})
    fine = solve(problem, knobs)
    assert sum(fine[f"{b}:drop"] for b in blocks) == 2
    coarse = solve(problem.coarse(), knobs)
    assert not any(coarse[f"{b}:drop"] for b in blocks)
    assert all(coarse[f"{b}.fc:quant"] == "w4" for b in blocks)


def test_budget_seeds_hold_coarse_and_per_unit_plans():
    knobs, problem = layered_instance()
    seeds, records = budget_solver.budget_seeds(problem, knobs, ladder=(1.0,))
    assert [r["coarse"] for r in records] == [True, False]
    assert len(seeds) == 2 and len(set(seeds[0].values())) == 1


def test_a_refit_never_more_than_halves_the_limit():
    """The measurement sees almost none of the modelled saving (a misjudged latency): the
    ratio correction alone would put the limit below zero."""
    knobs, problem = small_instance()
    problem = problem.with_limits({"size": 800.0})
    params, record = budget_solver.fit(problem, knobs, lambda p: {"size": 1290.0})
    assert params is None
    limits = [a["limits"]["size"] for a in record["attempts"] if "limits" in a]
    assert all(b >= 0.5 * a for a, b in zip(limits, limits[1:])) and min(limits) > 0


def two_layer_instance(heavy: float):
    """Two 100-parameter layers (4 bytes each as float), w4 saving 350 bytes per layer, a
    pruning ratio r removing 100 r parameters; the budget is 80 bytes, which formats alone
    (100 bytes) cannot reach. Returns (knobs, drops, problem, weights_after)."""
    knobs = [Knob(u, "quant", ("float", "w4"), "q") for u in ("a", "b")] + \
        [Knob(u, "prune_ratio", (0.0, 0.5, heavy), "p") for u in ("a", "b")]
    drops = {("quant", "w4"): 0.001, ("prune_ratio", 0.5): 0.1, ("prune_ratio", heavy): 0.9}
    problem = budget_solver.build_problem(
        knobs, lambda k, c: drops[(k.name, c)],
        {"size": lambda k, c: 350.0 if k.name == "quant" else 400.0 * c},
        {"size": 800.0}, {"size": 80.0},
        lambda k, c: {k.unit: 100.0 * c}, {"a": 100.0, "b": 100.0})

    def weights_after(params):
        out = {u: 100.0 * (1 - params.get(f"{u}:prune_ratio", 0.0)) for u in ("a", "b")}
        out[budget_solver.TOTAL] = sum(out.values())
        return out

    return knobs, drops, problem, weights_after


def test_alternating_starts_from_small_formats_when_formats_alone_cannot_fit():
    """From float weights the structure step would have to prune as if every weight stayed
    float (75% of both layers is not enough: no plan at all); from the most compressing
    formats it prunes just enough. The result is the exhaustive optimum."""
    knobs, drops, problem, weights_after = two_layer_instance(0.75)
    per = {"float": 4.0, "w4": 0.5}

    def true_size(params):
        return sum(100.0 * (1 - params[f"{u}:prune_ratio"]) * per[params[f"{u}:quant"]]
                   for u in ("a", "b"))

    found = budget_solver.alternate(problem, knobs, weights_after)
    assert found is not None and true_size(found) <= 80.0
    assert budget_solver.alternate(problem, knobs, weights_after,
                                   start=budget_solver.FLOAT_START) is None
    best = min(sum(drops.get((k.split(":")[1], v), 0.0) for k, v in params.items())
               for values in itertools.product(*(k.choices for k in knobs))
               if true_size(params := {k.key: v for k, v in zip(knobs, values)}) <= 80.0)
    assert budget_solver.total_drop(found, problem) == pytest.approx(best)


def test_budget_seeds_hold_the_float_start_plan_beside_the_least_drop_one():
    """The least-drop plan is 4-bit weights with half of one layer pruned; from float weights
    it is 95% of both layers pruned, left float (fewer parameters to train). Both are seeds,
    the least-drop one first."""
    knobs, _, problem, weights_after = two_layer_instance(0.95)
    seeds, records = budget_solver.budget_seeds(problem, knobs, ladder=(1.0,),
                                                weights_after=weights_after)
    assert [r["start"] for r in records] == ["best", budget_solver.FLOAT_START, "best"]
    least, heavy = seeds[0], seeds[1]
    assert least["a:quant"] == least["b:quant"] == "w4"
    assert sorted([least["a:prune_ratio"], least["b:prune_ratio"]]) == [0.0, 0.5]
    assert heavy == {"a:quant": "float", "b:quant": "float",
                     "a:prune_ratio": 0.95, "b:prune_ratio": 0.95}


def test_a_latency_limit_takes_fast_formats_before_pruning():
    """Latency only, 20 ms uncompressed, 9 ms allowed: int8 kernels save 4 ms per layer at
    a small drop, w4 (rebuilt to float at load) saves nothing and is the smallest format,
    pruning half a layer saves 5 ms at a larger drop. Formats alone (12 ms) cannot fit;
    the least-drop plan is int8 on both layers with one layer half pruned (the alternating
    knapsacks start from the fastest formats and keep their saving in the structure step),
    the exhaustive optimum, not both layers pruned with float weights."""
    knobs = [Knob(u, "quant", ("float", "w4", "w8a8"), "q") for u in ("a", "b")] + \
        [Knob(u, "prune_ratio", (0.0, 0.5), "p") for u in ("a", "b")]
    drops = {("quant", "w4"): 0.001, ("quant", "w8a8"): 0.002, ("prune_ratio", 0.5): 0.1}
    latency = {("quant", "w4"): 0.0, ("quant", "w8a8"): 4.0, ("prune_ratio", 0.5): 5.0}
    size = {("quant", "w4"): 350.0, ("quant", "w8a8"): 300.0, ("prune_ratio", 0.5): 200.0}
    problem = budget_solver.build_problem(
        knobs, lambda k, c: drops[(k.name, c)],
        {"size": lambda k, c: size[(k.name, c)], "latency": lambda k, c: latency[(k.name, c)]},
        {"size": 800.0, "latency": 20.0}, {"latency": 9.0},
        lambda k, c: {k.unit: 100.0 * c}, {"a": 100.0, "b": 100.0})

    def weights_after(params):
        out = {u: 100.0 * (1 - params.get(f"{u}:prune_ratio", 0.0)) for u in ("a", "b")}
        out[budget_solver.TOTAL] = sum(out.values())
        return out

    def true_latency(params):   # a pruned int8 layer: the int8 saving on what is left
        return sum(10.0 * (1 - params[f"{u}:prune_ratio"])
                   * (0.6 if params[f"{u}:quant"] == "w8a8" else 1.0) for u in ("a", "b"))

    found = budget_solver.alternate(problem, knobs, weights_after)
    assert found is not None and true_latency(found) <= 9.0
    assert found["a:quant"] == found["b:quant"] == "w8a8"
    assert sorted([found["a:prune_ratio"], found["b:prune_ratio"]]) == [0.0, 0.5]
    best = min(sum(drops.get((k.split(":")[1], v), 0.0) for k, v in params.items())
               for values in itertools.product(*(k.choices for k in knobs))
               if true_latency(params := {k.key: v for k, v in zip(knobs, values)}) <= 9.0)
    assert budget_solver.total_drop(found, problem) == pytest.approx(best)


def three_block_instance(limit: float):
    """Three blocks of 10 ms each (30 ms uncompressed); int8 kernels save 4 ms per block at
    a small drop, dropping a block saves its 10 ms at a drop that differs per block."""
    blocks = [f"layers.{i}" for i in range(3)]
    knobs = [Knob(b, "drop", (False, True), "d") for b in blocks] + \
        [Knob(b + ".fc", "quant", ("float", "w8a8"), "q") for b in blocks] + \
        [Knob(b + ".fc", "prune_ratio", (0.0, 0.5), "p") for b in blocks]
    block_drop = {"layers.0": 0.05, "layers.1": 0.01, "layers.2": 0.03}

    def drop(k, c):
        return {"drop": block_drop.get(k.unit), "quant": 0.002,
                "prune_ratio": 0.004}[k.name]

    latency = {"drop": 10.0, "quant": 4.0, "prune_ratio": 5.0}
    problem = budget_solver.build_problem(
        knobs, drop, {"size": lambda k, c: 1.0, "latency": lambda k, c: latency[k.name]},
        {"size": 300.0, "latency": 30.0}, {"latency": limit},
        lambda k, c: {k.unit + ".fc" if k.name == "drop" else k.unit: 100.0},
        {b + ".fc": 100.0 for b in blocks})
    return blocks, knobs, problem


def true_latency(params, blocks):
    return sum(10.0 * (0.6 if params[f"{b}.fc:quant"] == "w8a8" else 1.0)
               * (0.5 if params[f"{b}.fc:prune_ratio"] == 0.5 else 1.0)
               for b in blocks if not params[f"{b}:drop"])


def test_depth_plans_drop_whole_blocks_and_tie_the_formats_of_the_rest():
    """14 ms of 30: int8 everywhere (18 ms) is not enough. The depth shape prunes nothing:
    it drops the block that loses least and gives the two kept blocks the same format; the
    dropped block's units take none (a tie across every block would forbid int8 beside a
    drop and leave two blocks dropped in float)."""
    blocks, knobs, problem = three_block_instance(14.0)
    depth = solve(problem.depth(), knobs)
    assert [b for b in blocks if depth[f"{b}:drop"]] == ["layers.1"]
    assert depth["layers.0.fc:quant"] == depth["layers.2.fc:quant"] == "w8a8"
    assert depth["layers.1.fc:quant"] == "float"
    assert not any(depth[f"{b}.fc:prune_ratio"] for b in blocks)
    assert true_latency(depth, blocks) <= 14.0
    # the exhaustive optimum of the depth space: drops, and one format for every kept block
    best = min(budget_solver.total_drop(p, problem)
               for d in itertools.product((False, True), repeat=3)
               for q in ("float", "w8a8")
               if true_latency(p := {**{f"{b}:drop": x for b, x in zip(blocks, d)},
                                     **{f"{b}.fc:quant": "float" if x else q
                                        for b, x in zip(blocks, d)},
                                     **{f"{b}.fc:prune_ratio": 0.0 for b in blocks}},
                               blocks) <= 14.0)
    assert budget_solver.total_drop(depth, problem) == pytest.approx(best)


def test_a_latency_limit_seeds_the_depth_plan_first():
    blocks, knobs, problem = three_block_instance(14.0)
    seeds, records = budget_solver.budget_seeds(problem, knobs, ladder=(1.0,))
    assert [r["shape"] for r in records] == ["depth", "coarse", "per unit"]
    assert [b for b in blocks if seeds[0][f"{b}:drop"]] == ["layers.1"]
    for limits in ({"size": 200.0}, {"size": 200.0, "latency": 30.0}):   # no speed needed
        _, records = budget_solver.budget_seeds(problem.with_limits(limits), knobs,
                                                ladder=(1.0,))
        assert [r["shape"] for r in records] == ["coarse", "per unit"]


def test_one_of_the_repeated_blocks_is_always_kept():
    """2 ms of 30 needs every block dropped by the program's model: no plan, not an empty
    model (MiniLM at 1.75 ms: the depth seed dropped all six layers)."""
    blocks, knobs, problem = three_block_instance(2.0)
    assert solve(problem.depth(), knobs) is None
    found = solve(problem.depth().with_limits({"latency": 6.0}), knobs)
    assert sum(found[f"{b}:drop"] for b in blocks) == 2


def test_depth_plans_store_every_unit_inside_the_blocks_in_one_format():
    """Two units per block; int8 kernels cost b ten times what they cost a. By each unit's
    own drop, one block dropped with int8 on the a units only is the cheapest plan within
    16 ms of 30; a float unit beside int8 ones runs slower than the program's sum says, so
    the depth plan gives every unit in the blocks one format (here: two blocks dropped)."""
    blocks = [f"layers.{i}" for i in range(3)]
    knobs = [Knob(b, "drop", (False, True), "d") for b in blocks] + \
        [Knob(f"{b}.{u}", "quant", ("float", "w8a8"), "q") for b in blocks for u in "ab"]
    block_drop = {"layers.0": 0.05, "layers.1": 0.01, "layers.2": 0.03}
    problem = budget_solver.build_problem(
        knobs, lambda k, c: block_drop[k.unit] if k.name == "drop"
        else (0.001 if k.unit.endswith(".a") else 0.02),
        {"size": lambda k, c: 1.0, "latency": lambda k, c: 10.0 if k.name == "drop" else 2.0},
        {"size": 300.0, "latency": 30.0}, {"latency": 16.0})
    fine = solve(problem, knobs)
    assert sum(fine[f"{b}:drop"] for b in blocks) == 1
    assert {fine[f"{b}.b:quant"] for b in blocks} == {"float"}
    depth = solve(problem.depth(), knobs)
    assert [b for b in blocks if depth[f"{b}:drop"]] == ["layers.1", "layers.2"]
    kept = [b for b in blocks if not depth[f"{b}:drop"]]
    assert all(depth[f"{b}.a:quant"] == depth[f"{b}.b:quant"] for b in kept)


def test_the_solver_keeps_highs_messages_off_the_terminal(capfd):
    """HiGHS prints some messages on descriptor 1 itself; the solver silences it meanwhile
    and gives it back."""
    import os

    with budget_solver._quiet_stdout():
        os.write(1, b"from the solver\n")
    os.write(1, b"after it\n")
    assert capfd.readouterr().out == "after it\n"
