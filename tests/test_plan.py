from autocompress.compression.plan import Plan


def test_plan_round_trips_and_hashes_stably():
    plan = Plan({"b": {"quant": "w8"}, "a": {"prune_ratio": 0.5, "quant": "w4"}})
    same = Plan({"a": {"quant": "w4", "prune_ratio": 0.5}, "b": {"quant": "w8"}})
    assert plan.digest() == same.digest()
    assert Plan.from_dict(plan.to_dict()) == plan
    assert plan.digest() != Plan({"a": {"quant": "w4"}}).digest()
    assert plan.summary() == {"prune_ratio": {"0.5": 1}, "quant": {"w4": 1, "w8": 1}}
