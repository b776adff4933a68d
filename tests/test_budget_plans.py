"""budget_plans.py: what the search runs first under a budget."""
from autocompress.budget_plans import _uniform_within
from autocompress.compression.knobs import Knob
from autocompress.search import budget_solver


def test_uniform_anchors_that_fit_run_before_the_seeds_and_the_others_do_not():
    knobs = [Knob(u, "quant", ("float", "w8", "w4", "w8a8", "w8a8c"), "q") for u in ("a", "b")] + \
        [Knob("emb", "quant", ("float", "w8", "w4"), "q")]
    saved = {"w8": 300.0, "w4": 350.0, "w8a8": 300.0, "w8a8c": 295.0}
    problem = budget_solver.build_problem(
        knobs, lambda k, c: 0.01, {"size": lambda k, c: saved[c]}, {"size": 1200.0},
        {"size": 400.0})
    found = _uniform_within(problem, knobs, seeds=[])
    # uniform w8: 1200 - 3 x 300 = 300; w8a8 / w8a8c on a and b with int8 rows for the table
    # no int8 kernel reads: 300 and 310; w8a8cf (offered nowhere: the table alone, 900) does
    # not fit; w4 (150) is the most compressed corner, which runs before any seed anyway
    assert [p["a:quant"] for p in found] == ["w8a8c", "w8a8", "w8"]
    assert all(p["emb:quant"] == "w8" for p in found)
    assert [p["a:quant"] for p in _uniform_within(problem.with_limits({"size": 305.0}), knobs,
                                                  seeds=[])] == ["w8a8", "w8"]
    assert _uniform_within(problem, knobs, seeds=found[:1]) == found[1:]
