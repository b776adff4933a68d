"""Search quality machinery: hypervolume, sensitivity shaping and seeding, multi-fidelity
promotion, one front per target."""
import json

import numpy as np
import optuna
import pytest

from autocompress import api, sensitivity
from autocompress.compression import fidelity as build_fidelity
from autocompress.compression import registry
from tests.trial_records import metrics_record
from autocompress.compression.knobs import Knob
from autocompress.compression.plan import Plan
from autocompress.device_profiles import resolve_target
from autocompress.pipeline import Evaluator
from autocompress.search import hypervolume, seeding
from autocompress.search.objectives import Budget
from autocompress.search.study import enqueue_order

TINY = "tests.tiny_workload:make_workload"


# --------------------------------------------------------------------------- hypervolume


def test_hypervolume_of_hand_computable_points():
    scale = hypervolume.Scale(quality=0.8, latency_s=2e-3, size_bytes=1000)
    # relative (1.0, 0.5, 0.5) against reference (0.5, 10, 1): 0.5 * 9.5 * 0.5
    assert hypervolume.hypervolume([(0.8, 1e-3, 500)], scale) == pytest.approx(2.375)
    # a second point adds the box (0.75-0.5) x (10-0.25) x (1-0.25) minus the overlap
    two = hypervolume.hypervolume([(0.8, 1e-3, 500), (0.6, 0.5e-3, 250)], scale)
    overlap = (0.75 - 0.5) * (10 - 0.5) * (1 - 0.5)
    assert two == pytest.approx(2.375 + 0.25 * 9.75 * 0.75 - overlap)
    # outside the reference box (bigger than the original): contributes nothing
    assert hypervolume.hypervolume([(0.8, 1e-3, 1500)], scale) == 0.0


def test_hypervolume_history_is_cumulative():
    scale = hypervolume.Scale(1.0, 1.0, 1.0)
    points = [(1.0, 1.0, 0.5), None, (0.4, 0.1, 0.1), (1.0, 0.5, 0.5), (0.9, 0.9, 0.9)]
    history = hypervolume.history(points, scale)
    assert history == [pytest.approx(v) for v in (2.25, 2.25, 2.25, 2.375, 2.375)]
    assert history[-1] == pytest.approx(hypervolume.hypervolume([p for p in points if p], scale))


# --------------------------------------------------------------------------- seeding


def _knobs():
    return [Knob("a", "quant", ("float", "w8", "w8a8", "w4"), "quantization"),
            Knob("b", "quant", ("float", "w8", "w8a8", "w4"), "quantization"),
            Knob("a", "rank_ratio", (1.0, 0.5, 0.25), "low-rank"),
            Knob("emb", "quant", ("float", "w8"), "quantization")]


DROPS = {"a:quant": {"w8": 0.0, "w8a8": 0.02, "w4": 0.01},
         "b:quant": {"w8": 0.0, "w8a8": 0.001, "w4": 0.3},
         "a:rank_ratio": {0.5: 0.004, 0.25: 0.5},
         "emb:quant": {"w8": 0.0}}
SAVED = {"a:quant": {"w8": 300, "w8a8": 300, "w4": 350},
         "b:quant": {"w8": 30, "w8a8": 30, "w4": 35},
         "a:rank_ratio": {0.5: 200, 0.25: 300},
         "emb:quant": {"w8": 3000}}


def _drop(knob, choice):
    return 0.0 if choice == knob.choices[0] else DROPS[knob.key].get(choice)


def _saved(knob, choice):
    return 0.0 if choice == knob.choices[0] else SAVED[knob.key].get(choice)


def test_shape_removes_catastrophic_choices_only():
    shaped = {k.key: k.choices for k in seeding.shape(_knobs(), _drop, base_quality=1.0)}
    assert shaped["b:quant"] == ("float", "w8", "w8a8")            # w4 costs 0.3 > 0.25
    assert shaped["a:rank_ratio"] == (1.0, 0.5)                    # 0.25 costs 0.5
    assert shaped["a:quant"] == ("float", "w8", "w8a8", "w4")


def test_greedy_seed_respects_the_allowance_and_prefers_free_savings():
    knobs = seeding.shape(_knobs(), _drop, 1.0)
    tight = seeding._greedy(knobs, _drop, _saved, allowance=0.0, ladder="size", latency=_unmeasured)
    assert tight == {"a:quant": "w8", "b:quant": "w8", "a:rank_ratio": 1.0, "emb:quant": "w8"}
    # rank 0.5 first (200 bytes for 0.004: the best ratio), then w4 would overrun 0.012
    mid = seeding._greedy(knobs, _drop, _saved, allowance=0.012, ladder="size",
                           latency=_unmeasured)
    assert (mid["a:quant"], mid["a:rank_ratio"]) == ("w8", 0.5)
    loose = seeding._greedy(knobs, _drop, _saved, allowance=0.015, ladder="size",
                             latency=_unmeasured)
    assert (loose["a:quant"], loose["a:rank_ratio"]) == ("w4", 0.5)
    assert sum(_drop(k, loose[k.key]) for k in knobs) <= 0.015
    speed = seeding._greedy(knobs, _drop, _saved, allowance=0.05, ladder="speed",
                            latency=_unmeasured)
    assert speed["a:quant"] in ("float", "w8a8") and speed["b:quant"] in ("float", "w8a8")
    assert speed["emb:quant"] == "w8"      # no int8 compute there: any weight format


def _unmeasured(knob, choice):
    return None


def test_measured_format_latency_decides_the_speed_and_no_slower_seeds():
    """A CNN on a CPU without VNNI: int8 convolution 12x slower than float, dequantizing
    w8 3x slower, a w4 format rebuilt to float at load time as fast as float."""
    ratios = {"w8a8": 12.0, "w8": 3.0, "w4": 1.0}

    def latency(knob, choice):
        return ratios.get(choice)

    knobs = seeding.shape(_knobs(), _drop, 1.0)
    speed = seeding._greedy(knobs, _drop, _saved, 0.05, "speed", latency)
    assert (speed["a:quant"], speed["b:quant"]) == ("float", "float")   # nothing faster here
    assert speed["emb:quant"] == "w8"      # no int8 kernel on the embedding: any format
    no_slower = seeding._greedy(knobs, _drop, _saved, 0.05, "no slower", latency)
    assert no_slower["a:quant"] == "w4" and no_slower["emb:quant"] == "float"
    seeds = seeding.seed_params(knobs, _drop, _saved, 1.0, latency)
    assert no_slower in seeds and speed in seeds


def test_bolder_seeds_take_the_most_distillation_and_come_last():
    knobs = seeding.shape(_knobs(), _drop, 1.0) + [Knob("", "distill_steps", (0, 50, 200),
                                                        "knowledge distillation")]
    def drop(knob, choice):                # distillation is never measured
        return 0.0 if choice == knob.choices[0] else DROPS.get(knob.key, {}).get(choice)

    def saved(knob, choice):
        return 0.0 if choice == knob.choices[0] else SAVED.get(knob.key, {}).get(choice)

    seeds = seeding.seed_params(knobs, drop, saved, 1.0, lambda k, c: 1.0)
    distilled = [s for s in seeds if s[":distill_steps"] == 200]
    assert distilled and seeds[-len(distilled):] == distilled
    assert all(s[":distill_steps"] == 0 for s in seeds[:-len(distilled)])
    bold = distilled[-1]                   # 0.2 of the quality: rank 0.5 and w4 both fit
    assert (bold["a:quant"], bold["a:rank_ratio"]) == ("w4", 0.5)


def test_seeds_are_enqueued_after_the_first_anchors_and_leave_room_for_the_sampler():
    anchors = [{"x": 0}, {"x": 9}, {"x": 1}, {"x": 2}]
    seeds = [{"x": 5}, {"x": 1}, {"x": 6}]
    assert enqueue_order(anchors, seeds, 30) == [{"x": 0}, {"x": 9}, {"x": 1}, {"x": 5},
                                                 {"x": 6}, {"x": 2}]
    assert len(enqueue_order(anchors, seeds, 6)) == 4


# --------------------------------------------------------------------------- sensitivity


def test_sensitivity_measures_each_choice_alone_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    workload = api.load_workload(TINY)
    knobs = api.discover_knobs(workload)
    result = sensitivity.analyse(workload, knobs)
    measured = [k for k in knobs if sensitivity.measurable(k)]
    assert {k.key for k in measured} <= set(result.drops)
    assert result.drop(measured[0], measured[0].choices[0]) == 0.0
    fc1_w2 = next(k for k in knobs if k.key == "fc1:quant")
    assert result.drop(fc1_w2, "w16") == pytest.approx(0.0, abs=0.01)
    prune = next(k for k in knobs if k.name == "prune_ratio")
    assert result.drop(prune, 0.75) > result.drop(prune, 0.25) - 0.01
    # 24 of 32 bits per weight, less what w8 stores beside the codes: one fp32 scale per
    # output column (128) and its DequantizeLinear node (measured, not counted from bits)
    saved = result.saved_bytes(fc1_w2, "w8")
    assert 64 * 128 * 3 - 128 * 4 - 160 <= saved <= 64 * 128 * 3 - 128 * 4
    # every weight format timed model-wide against float
    formats = {f"{k.name}:{sensitivity.choice_key(c)}" for k in knobs
               if sensitivity.probe(k) == "weights" for c in k.choices[1:]}
    assert set(result.format_latency) == formats
    assert all(0 < r < 100 for r in result.format_latency.values())
    assert result.latency_ratio(fc1_w2, "w8a8") == result.format_latency['quant:"w8a8"']
    # the same model again: read from the cache, not measured again
    files = list((tmp_path / "sensitivity").glob("*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    stored["base_quality"] = -1.0          # marker: proves the next call reads the file
    files[0].write_text(json.dumps(stored))
    assert sensitivity.analyse(workload, knobs).base_quality == -1.0


def test_fidelity_proxy_metric():
    ref = [np.array([[1.0, 0.0], [0.0, 1.0]])]
    same = sensitivity._agreement("embedding", ref, ref)
    assert same == pytest.approx(1.0)
    assert sensitivity._agreement("embedding", [np.array([[1.0, 1.0], [0.0, 1.0]])], ref) == \
        pytest.approx((np.sqrt(0.5) + 1) / 2)
    assert sensitivity._agreement("logits", [np.array([[0.0, 1.0], [0.0, 1.0]])], ref) == 0.5


# --------------------------------------------------------------------------- multi-fidelity


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


def test_unknown_second_target_is_one_line_exit_2(tmp_path, capsys):
    from autocompress.cli import main

    code = main(["search", "--model", TINY, "--target", "host,mars-rover", "--trials", "2",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "mars-rover" in err[0]
    assert not (tmp_path / "run").exists()


def test_sensitivity_routes_agree_torch_weights_equal_the_stored_ones():
    """The torch route (weights replaced by what the artifact stores, w8a8 inputs quantized
    like DynamicQuantizeLinear) gives the quality ONNX Runtime gives on the real graph."""
    workload = api.load_workload(TINY)
    knobs = {k.key: k for k in api.discover_knobs(workload)}
    probe = sensitivity._Probe(workload)
    for key, choice in (("fc1:quant", "w2"), ("fc1:quant", "w8a8"), ("fc2:sparsity", 0.9),
                        ("fc2:clusters", 16)):
        probe.use_onnx = True
        onnx_quality = probe.quality(knobs[key], choice)[0]
        probe.use_onnx = False
        torch_quality = probe.quality(knobs[key], choice)[0]
        assert torch_quality == pytest.approx(onnx_quality, abs=0.006), (key, choice)
    assert probe.quality(knobs["fc1:quant"], "w2")[0] < probe.base_quality


def test_gentler_choices_are_bounded_by_a_free_harsher_one():
    quant = Knob("a", "quant", ("float", "w8", "w4", "w8a8", "w16", "w3", "w2"), "quantization")
    assert sensitivity.harshest_first(quant) == [["w2", "w3", "w4", "w8", "w16"], ["w8a8"]]
    prune = Knob("a", "prune_ratio", (0.0, 0.25, 0.5, 0.75), "pruning")
    assert sensitivity.harshest_first(prune) == [[0.75, 0.5, 0.25]]


def test_seed_ladder_spreads_when_single_choices_measure_free():
    """Choices that measured no drop alone still cost the measurement's resolution, so the
    ladder of allowances gives seeds with more and more changes instead of one big plan."""
    knobs = [Knob(f"l{i}", "quant", ("float", "w4"), "quantization") for i in range(10)]

    def drop(knob, choice):
        return 0.0 if choice == "float" else (0.01 if knob.unit == "l0" else 0.0)

    seeds = seeding.seed_params(knobs, drop, lambda k, c: 0.0 if c == "float" else 100.0, 1.0)
    changed = [sum(v == "w4" for v in s.values()) for s in seeds]
    assert changed == [0, 1, 2, 5]        # allowances .002 .005 | .01 | .02 | .05 of 0.01 each
