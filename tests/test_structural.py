"""Precedence between structural knobs, and: every plan the space can propose applies."""
import numpy as np
import pytest
import torch

from autocompress.backends.ort_runner import make_session, run_batches
from autocompress.compression.apply import apply_plan
from autocompress.compression.knobs import torch_knobs
from autocompress.compression.plan import (DECOMP, DISTILL_STEPS, DROP, EXIT_AFTER,
                                           EXIT_THRESHOLD, PRUNE_RATIO, QUANT, RANK_RATIO,
                                           REPLACE, SHARE, WHOLE_MODEL, Plan)
from autocompress.compression.structural.precedence import resolve
from autocompress.search.space import params_to_plan
from tests.fixture_models import conv_workload
from tests.fixture_models import residual_cnn_workload
from tests.tiny_transformer import make_tiny_transformer

MINE = {DROP, SHARE, DECOMP, REPLACE, DISTILL_STEPS}
TORCH_STAGE = MINE | {PRUNE_RATIO, RANK_RATIO, EXIT_AFTER, EXIT_THRESHOLD}
"""The knobs that shape the torch model (the ONNX-side weight knobs have their own tests)."""


def test_precedence_rules():
    plan = Plan({
        "layers.1": {DROP: True, SHARE: True},
        "layers.1.ffn": {REPLACE: "ffn:0.5", PRUNE_RATIO: 0.5, QUANT: "w8"},
        "layers.1.attention": {PRUNE_RATIO: 0.5},
        "layers.2": {SHARE: True},                       # predecessor dropped: ignored
        "layers.4": {SHARE: True},
        "layers.4.attention.q": {RANK_RATIO: 0.5, QUANT: "w4"},
        "layers.5.ffn": {REPLACE: "ffn:0.25", PRUNE_RATIO: 0.25},
        "layers.5.ffn.fc1": {RANK_RATIO: 0.5},
        "conv": {REPLACE: "dwsep", DECOMP: "cp:0.5", RANK_RATIO: 0.5},
        "conv2": {DECOMP: "tucker:0.5", RANK_RATIO: 0.5},
        WHOLE_MODEL: {DISTILL_STEPS: 50},
    })
    assert resolve(plan).to_dict()["units"] == {
        "": {DISTILL_STEPS: 50},
        "conv": {REPLACE: "dwsep"},
        "conv2": {DECOMP: "tucker:0.5"},
        "layers.1": {DROP: True},
        "layers.1.attention": {PRUNE_RATIO: 0.5},       # pruning runs before the drop
        "layers.1.ffn": {PRUNE_RATIO: 0.5, QUANT: "w8"},
        "layers.4": {SHARE: True},
        "layers.4.attention.q": {QUANT: "w4"},
        "layers.5.ffn": {REPLACE: "ffn:0.25"},
    }


def _random_plans(knobs, n, seed):
    rng = np.random.default_rng(seed)
    corner = {k.key: k.choices[-1] for k in knobs}
    corner[f"{WHOLE_MODEL}:{DISTILL_STEPS}"] = 50
    plans = [params_to_plan(corner, knobs)]
    for _ in range(n):
        params = {k.key: k.choices[rng.integers(len(k.choices))] for k in knobs}
        params[f"{WHOLE_MODEL}:{DISTILL_STEPS}"] = 0 if rng.random() < 0.5 else 50
        plans.append(params_to_plan(params, knobs))
    return plans


@pytest.mark.parametrize("make", [make_tiny_transformer, conv_workload, residual_cnn_workload])
def test_every_proposable_plan_applies(tmp_path, make):
    workload = make()
    args = [torch.from_numpy(workload.example[n]) for n in workload.input_names]
    knobs = [k for k in torch_knobs(workload.model, args, workload.input_names)
             if k.name in TORCH_STAGE]
    assert {k.name for k in knobs} & MINE
    for i, plan in enumerate(_random_plans(knobs, 2, seed=len(knobs))):
        artifact = apply_plan(plan, workload, tmp_path / f"{i}.onnx")
        out = run_batches(make_session(artifact.path), workload.evaluation)[0][0]
        assert np.isfinite(out).all(), plan.to_json()


def test_early_exit_keeps_its_containers_blocks():
    plan = Plan({"layers": {EXIT_AFTER: "layers.1"}, "layers.2": {DROP: True, QUANT: "w8"},
                 "layers.3": {SHARE: True}, "blocks.1": {DROP: True}})
    assert resolve(plan).to_dict()["units"] == {
        "blocks.1": {DROP: True}, "layers": {EXIT_AFTER: "layers.1"}, "layers.2": {QUANT: "w8"}}


def test_knobs_on_unsuitable_layers_are_refused_by_name(tmp_path):
    workload = conv_workload()
    with pytest.raises(ValueError, match="tensor decomposition needs a full k x k Conv2d; '6'"):
        apply_plan(Plan({"6": {DECOMP: "tucker:0.5"}}), workload, tmp_path / "a.onnx")
    with pytest.raises(ValueError, match="module replacing 'ffn:0.5' needs an FFN"):
        apply_plan(Plan({"2": {REPLACE: "ffn:0.5"}}), workload, tmp_path / "a.onnx")
