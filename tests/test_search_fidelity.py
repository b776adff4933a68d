"""Multi-fidelity: a proxy trains less into its own artifact; only promising proxies are
promoted, and proxies stay off the front."""
import optuna

from autocompress import api
from autocompress.compression import fidelity as build_fidelity
from autocompress.compression import registry
from autocompress.compression.plan import Plan
from autocompress.device_profiles import resolve_target
from autocompress.pipeline import Evaluator
from autocompress.search import hypervolume
from autocompress.search.objectives import Budget
from tests.trial_records import metrics_record


TINY = "tests.tiny_workload:make_workload"


def test_proxy_build_trains_less_into_its_own_artifact(tmp_path):
    workload = api.load_workload(TINY)
    evaluator = Evaluator(workload, resolve_target("host"), artifact_root=tmp_path)
    plan = Plan({"": {"distill_steps": 200}, "fc1": {"rank_ratio": 0.25, "quant": "w8"}})
    assert registry.trains(plan) and not registry.trains(Plan({"fc1": {"quant": "w4"}}))
    with build_fidelity.proxy():
        assert build_fidelity.steps(200) == 50 and build_fidelity.steps(0) == 0
    proxy = evaluator.evaluate(plan, proxy=True)
    full = evaluator.evaluate(plan)
    assert (proxy.fidelity, full.fidelity) == ("proxy", "full")
    assert proxy.size_bytes == full.size_bytes          # same graph, same storage
    assert proxy.artifact_sha256 != full.artifact_sha256  # different training
    assert len(list(tmp_path.glob("*-proxy.onnx"))) == 1
    plain = evaluator.evaluate(Plan({"fc1": {"quant": "w4"}}), proxy=True)
    assert plain.fidelity == "full"                     # nothing to scale


class _Proxy:
    """The numbers a proxy evaluation hands to the promotion rule."""

    def __init__(self, quality, latency_s, size_bytes):
        self.quality, self._values = quality, {"quality": quality, "latency_s": latency_s,
                                                "size_bytes": size_bytes}

    def objective(self, name):
        return self._values[name]


def _full(number, values, constraints=None):
    trial = optuna.trial.create_trial(values=list(values), constraints=constraints or {},
                                      user_attrs={"metrics": metrics_record(values[0])})
    trial.number = number
    return trial


def test_promotion_skips_proxies_below_half_the_best_feasible_quality():
    from autocompress.search.fidelity import USEFUL_QUALITY, promising

    assert USEFUL_QUALITY == hypervolume.REFERENCE[0]
    baseline = _full(0, (0.99, 1e-3, 300_000))
    tiny_and_broken = _Proxy(0.30, 0.5e-3, 10_000)   # smaller and faster than anything so far
    promote, why = promising(tiny_and_broken, [baseline], Budget())
    assert not promote and "below 0.5 of the best feasible quality 0.9900" in why
    # a budget nothing good fits: the rule is off, non-dominated proxies are promoted
    budget = Budget(max_size_bytes=20_000)
    infeasible = _full(0, (0.99, 1e-3, 300_000), {"size": 14.0})
    promote, why = promising(tiny_and_broken, [infeasible], budget)
    assert promote and why.startswith("non-dominated")
    # above the floor and non-dominated: promoted
    assert promising(_Proxy(0.60, 0.5e-3, 10_000), [baseline], Budget())[0]


def test_search_promotes_only_promising_proxies_and_keeps_them_off_the_front(tmp_path):
    config = api.SearchConfig(model=TINY, target="host,jetson-nano,raspberry-pi-4", trials=14,
                              seed=3, out=str(tmp_path / "run"), budget=Budget())
    document = api.search(config).document
    study = optuna.load_study(study_name="autocompress", storage=document["study"]["storage"])
    complete = [t for t in study.trials if t.values is not None]
    staged = [t for t in complete if "promotion" in t.user_attrs]
    assert staged, "some plan trained, so went through the proxy first"
    for t in staged:
        promoted = t.user_attrs["promotion"]["promoted"]
        assert t.user_attrs["metrics"]["fidelity"] == ("full" if promoted else "proxy")
        assert ("proxy_quality" in t.user_attrs) == promoted
    proxies = {t.number for t in staged if not t.user_attrs["promotion"]["promoted"]}
    for front in document["fronts"].values():
        assert not proxies & {p["id"] for p in front}
    # one front per target, each ranked by that target's own latency
    assert set(document["fronts"]) == {"host", "jetson-nano", "raspberry-pi-4"}
    assert document["fronts"]["host"] == document["front"]
    by_id = {t.number: t for t in complete}
    for name in ("jetson-nano", "raspberry-pi-4"):
        for p in document["fronts"][name]:
            numbers = by_id[p["id"]].user_attrs["metrics"]["per_target"][name]
            assert p["latency_s"] == numbers["latency_s"] and p["target"] == name
            assert p["provenance"]["latency_s"]["device"] == name
    # hypervolume after every complete trial, never decreasing
    history = [h["hypervolume"] for h in document["study"]["hypervolume"]["history"]]
    assert len(history) == len(complete) and history[-1] > 0
    assert all(b >= a for a, b in zip(history, history[1:]))
    assert "sensitivity" in study.user_attrs
