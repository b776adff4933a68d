"""Module replacing: narrower FFNs and depthwise-separable convs, trained by local distillation."""
import copy

import numpy as np
import onnx
import torch
from torch import nn

from autocompress.compression.apply import apply_plan, compress_torch
from autocompress.compression.initializers import match_initializers
from autocompress.compression.plan import PRUNE_RATIO, RANK_RATIO, REPLACE, Plan
from autocompress.compression.structural.replace import (Separable, fit_locally, record_inputs,
                                                         replace_knobs, substitute)
from tests.fixture_models import conv_workload
from tests.tiny_transformer import make_tiny_transformer


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def batches_of(workload):
    return [tuple(torch.from_numpy(b[n]) for n in workload.input_names) for b in workload.calibration]


def test_knobs_for_ffns_and_full_convs():
    knobs, skips = replace_knobs(make_tiny_transformer().model)
    assert [(k.unit, k.choices) for k in knobs] == [
        (f"layers.{i}.ffn", ("none", "ffn:0.5", "ffn:0.25")) for i in range(3)]
    knobs, skips = replace_knobs(conv_workload().model)
    assert [(k.unit, k.choices) for k in knobs] == [("2", ("none", "dwsep"))]
    assert [s.unit for s in skips] == ["0"] and "module replacing" in skips[0].message()


def test_dwsep_init_is_exact_for_a_separable_kernel():
    conv = nn.Conv2d(4, 8, 3, padding=1)
    with torch.no_grad():   # W[o, i] = P[o, i] * D[i]: rank one per input channel
        conv.weight.copy_(torch.randn(8, 4, 1, 1) * torch.randn(1, 4, 3, 3))
    sep = substitute(conv, "dwsep")
    assert isinstance(sep, Separable)
    assert n_params(sep) == 4 * 9 + 4 * 8 + 8 == 76
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        np.testing.assert_allclose(sep(x), conv(x), atol=1e-5)


def test_local_distillation_lowers_the_block_error():
    workload = conv_workload()
    model = copy.deepcopy(workload.model)
    inputs = record_inputs(model, ["2"], batches_of(workload))["2"]
    assert len(inputs) == 1 and inputs[0].shape == (4, 16, 10, 10)
    new = substitute(model[2], "dwsep")
    losses = fit_locally(new, model[2], inputs, steps=60)
    assert len(losses) == 60
    assert losses[-1] < 0.7 * losses[0]


def test_narrower_ffn_replaces_the_block(tmp_path):
    workload = make_tiny_transformer()
    base = apply_plan(Plan(), workload, tmp_path / "base.onnx")
    plan = Plan({"layers.0.ffn": {REPLACE: "ffn:0.5", PRUNE_RATIO: 0.75},
                 "layers.0.ffn.fc1": {RANK_RATIO: 0.5}})
    model = compress_torch(plan, workload)
    ffn = model.layers[0].ffn
    assert ffn.fc1.out_features == ffn.fc2.in_features == 32          # 64 * 0.5, pruning ignored
    assert isinstance(ffn.fc1, nn.Linear)                               # low-rank inside ignored
    artifact = apply_plan(plan, workload, tmp_path / "r.onnx", model=model)
    assert base.n_params - artifact.n_params == 32 * 32 + 32 + 32 * 32 == 2080
    assert artifact.size_bytes < base.size_bytes
    # the trained substitute is closer to the original block than its pruned initialisation
    inputs = record_inputs(workload.model, ["layers.0.ffn"], batches_of(workload))["layers.0.ffn"]
    original = workload.model.layers[0].ffn
    init = substitute(original, "ffn:0.5")
    x = torch.cat([t.reshape(-1, 32) for t in inputs])
    with torch.no_grad():
        target = original(x)
        trained_err = (ffn(x) - target).pow(2).mean()
        init_err = (init(x) - target).pow(2).mean()
    assert trained_err < 0.7 * init_err


def test_separable_parts_answer_to_their_unit(tmp_path):
    workload = conv_workload()
    plan = Plan({"2": {REPLACE: "dwsep"}})
    model = compress_torch(plan, workload)
    assert isinstance(model[2], Separable)
    artifact = apply_plan(plan, workload, tmp_path / "a.onnx")
    units = match_initializers(onnx.load(str(artifact.path)), model)
    assert sorted(units.values()).count("2") == 2
    assert artifact.n_params == apply_plan(Plan(), workload, tmp_path / "b.onnx").n_params - (
        16 * 32 * 9 - (16 * 9 + 16 * 32))
