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


def test_format_savings_share_each_uniform_plans_predicted_saving_by_parameters(tmp_path):
    """Under a latency or energy limit the program credits a weight format with what the
    primary target's cost model predicts its uniform plan saves, split by the parameters of
    the units it covers: the pieces add up to the uniform plan's saving, and an int8-kernel
    format's sign follows the target's prediction (it is not taken as saving nothing)."""
    from autocompress.budget_plans import _format_savings, _numbers, _workload_unit_params
    from autocompress.compression.knobs import torch_knobs
    from autocompress.compression.plan import Plan
    from autocompress.device_profiles.profile import resolve_target
    from autocompress.pipeline import Evaluator
    import torch

    from tests.tiny_workload import make_workload

    workload = make_workload()
    knobs = torch_knobs(workload.model, [torch.from_numpy(workload.example["x"])])
    evaluator = Evaluator(workload, resolve_target("raspberry-pi-4"), artifact_root=tmp_path)
    base = _numbers(evaluator, Plan())
    sizes = _workload_unit_params(workload, knobs)
    savings = _format_savings(evaluator, knobs, base, sizes, ["latency", "energy"])
    quant = [k for k in knobs if k.name == "quant"]
    assert {c for _, c in savings} == {c for k in quant for c in k.choices[1:]}
    for choice in ("w8a8", "w4"):
        units = [k.unit for k in quant if choice in k.choices]
        uniform = _numbers(evaluator, Plan({u: {"quant": choice} for u in units}))
        for resource in ("latency", "energy"):
            pieces = [savings[(u, choice)][resource] for u in units]
            assert abs(sum(pieces) - (base[resource] - uniform[resource])) <= \
                1e-9 * base[resource]
            assert abs(pieces[0] / sizes[units[0]] - pieces[1] / sizes[units[1]]) <= \
                1e-9 * abs(pieces[0] / sizes[units[0]]) + 1e-18
    assert sum(savings[(u, "w8a8")]["latency"] for u in sizes
               if (u, "w8a8") in savings) != 0.0


class _Sleeper:
    """A session whose every run takes ``seconds`` of wall time, whatever the CPU does."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def get_inputs(self):
        return []

    def run(self, _, feed):
        import time
        time.sleep(self.seconds)


def test_relative_latency_is_the_ratio_of_the_two_sessions_timed_in_turn():
    from autocompress.backends import ort_runner

    config = ort_runner.TimingConfig(warmup=1, repeat=5, threads=1)
    ratio = ort_runner.relative_latency(_Sleeper(0.006), _Sleeper(0.002), {}, config, rounds=3)
    assert 2.0 < ratio < 4.0


def test_the_host_clock_times_only_where_the_host_is_measured(tmp_path):
    """A host target measured: the seeds' latencies are ratios to the uncompressed model
    timed beside them, times its latency at the start (the uncompressed model itself reads
    about that); another target, or ``--cost predicted``: its cost model, no clock."""
    from autocompress.budget_plans import HostClock, _numbers
    from autocompress.compression.plan import Plan
    from autocompress.cost_models.layers import describe
    from autocompress.device_profiles.profile import resolve_target
    from autocompress.pipeline import Evaluator

    from tests.tiny_workload import make_workload

    workload = make_workload()
    host = Evaluator(workload, resolve_target("host"), artifact_root=tmp_path)
    assert HostClock.of(Evaluator(workload, resolve_target("raspberry-pi-4"),
                                  artifact_root=tmp_path)) is None
    assert HostClock.of(Evaluator(workload, resolve_target("host"), artifact_root=tmp_path,
                                  cost="predicted")) is None
    clock = HostClock.of(host)
    assert clock is not None and clock.uncompressed_s > 0
    timed = _numbers(host, Plan(), clock)["latency"]
    assert 0.2 < timed / clock.uncompressed_s < 5.0
    graph = describe(host.artifact_path(Plan()), host.latency_shapes)
    assert _numbers(host, Plan())["latency"] == host.cost_model.predict(graph).latency_s
