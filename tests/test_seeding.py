"""Sensitivity seeds: catastrophic choices removed, greedy seeds within each allowance,
measured format speed deciding the speed seeds, their place in the queue."""
from autocompress.compression.knobs import Knob
from autocompress.search import seeding
from autocompress.search.study import enqueue_order


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


def test_seed_ladder_spreads_when_single_choices_measure_free():
    """Choices that measured no drop alone still cost the measurement's resolution, so the
    ladder of allowances gives seeds with more and more changes instead of one big plan."""
    knobs = [Knob(f"l{i}", "quant", ("float", "w4"), "quantization") for i in range(10)]

    def drop(knob, choice):
        return 0.0 if choice == "float" else (0.01 if knob.unit == "l0" else 0.0)

    seeds = seeding.seed_params(knobs, drop, lambda k, c: 0.0 if c == "float" else 100.0, 1.0)
    changed = [sum(v == "w4" for v in s.values()) for s in seeds]
    assert changed == [0, 1, 2, 5]        # allowances .002 .005 | .01 | .02 | .05 of 0.01 each
