"""Tucker-2 / CP conv decomposition: exact layer shapes, faithful wiring, smaller files."""
import numpy as np
import onnx
import pytest
import torch
from torch import nn

from autocompress.compression.apply import apply_plan, compress_torch
from autocompress.compression.initializers import match_initializers
from autocompress.compression.structural.decompose import Decomposed, decomp_knobs, decompose
from autocompress.compression.plan import DECOMP, QUANT, RANK_RATIO, Plan
from tests.fixture_models import conv_workload


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_knobs_only_where_decomposition_saves():
    workload = conv_workload()
    knobs, skips = decomp_knobs(workload.model)
    assert [(k.unit, k.choices) for k in knobs] == [
        ("2", ("none", "tucker:0.5", "tucker:0.25", "cp:0.5", "cp:0.25"))]
    assert [s.unit for s in skips] == ["0"]
    assert "saves 256 parameters per added layer" in skips[0].message()


def test_tucker2_shapes_and_parameter_count():
    conv = conv_workload().model[2]
    layers = decompose(conv, "tucker:0.5")          # R_out = 16, R_in = 8
    assert [type(m) for m in layers] == [nn.Conv2d] * 3
    assert [tuple(m.weight.shape) for m in layers] == [(8, 16, 1, 1), (16, 8, 3, 3), (32, 16, 1, 1)]
    assert layers[1].stride == (2, 2) and layers[1].padding == (1, 1)
    assert n_params(layers) == 16 * 8 + 8 * 16 * 9 + 16 * 32 + 32 == 1824


def test_full_rank_tucker_reproduces_the_conv():
    conv = conv_workload().model[2]
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        np.testing.assert_allclose(decompose(conv, "tucker:1.0")(x), conv(x), atol=1e-4)


def test_cp_layers_compute_the_cp_tensor():
    """The 1x1 -> kx1 dw -> 1xk dw -> 1x1 chain equals a conv whose kernel is the CP tensor."""
    conv = conv_workload().model[2]
    layers = decompose(conv, "cp:0.25")              # rank 8
    assert [tuple(m.weight.shape) for m in layers] == [(8, 16, 1, 1), (8, 1, 3, 1), (8, 1, 1, 3),
                                                      (32, 8, 1, 1)]
    assert layers[1].groups == layers[2].groups == 8
    assert n_params(layers) == 8 * (16 + 3 + 3 + 32) + 32 == 464
    w = torch.einsum("or,ri,rh,rw->oihw", layers[3].weight[:, :, 0, 0], layers[0].weight[:, :, 0, 0],
                     layers[1].weight[:, 0, :, 0], layers[2].weight[:, 0, 0, :])
    reference = nn.Conv2d(16, 32, 3, stride=2, padding=1)
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        reference.weight.copy_(w)
        reference.bias.copy_(conv.bias)
        np.testing.assert_allclose(layers(x), reference(x), atol=1e-4)
        rel = (w - conv.weight).norm() / conv.weight.norm()
    assert 0.05 < rel < 1.0     # a real approximation, closer than nothing


@pytest.mark.parametrize("choice,saved", [("tucker:0.5", 16 * 32 * 9 + 32 - 1824),
                                          ("cp:0.25", 16 * 32 * 9 + 32 - 464)])
def test_plan_shrinks_the_file_and_maps_units(tmp_path, choice, saved):
    workload = conv_workload()
    base = apply_plan(Plan(), workload, tmp_path / "base.onnx")
    plan = Plan({"2": {DECOMP: choice, QUANT: "w8"}})
    artifact = apply_plan(Plan({"2": {DECOMP: choice}}), workload, tmp_path / "d.onnx")
    assert base.n_params - artifact.n_params == saved
    assert artifact.size_bytes < base.size_bytes - 4 * saved + 1024
    model = compress_torch(plan, workload)
    assert isinstance(model[2], Decomposed)
    units = match_initializers(onnx.load(str(artifact.path)), model)
    assert sorted(units.values()).count("2") == len(model[2])   # every part answers to unit "2"
    quantized = apply_plan(plan, workload, tmp_path / "q.onnx")
    assert quantized.size_bytes < artifact.size_bytes


def test_decomposition_wins_over_low_rank_on_the_same_conv(tmp_path):
    workload = conv_workload()
    both = compress_torch(Plan({"2": {DECOMP: "tucker:0.25", RANK_RATIO: 0.5}}), workload)
    alone = compress_torch(Plan({"2": {DECOMP: "tucker:0.25"}}), workload)
    assert isinstance(both[2], Decomposed)
    for a, b in zip(both.parameters(), alone.parameters()):
        assert torch.equal(a, b)


def test_same_plan_same_bytes(tmp_path):
    workload = conv_workload()
    plan = Plan({"2": {DECOMP: "cp:0.5"}})
    a = apply_plan(plan, workload, tmp_path / "a.onnx")
    b = apply_plan(plan, workload, tmp_path / "b.onnx")
    assert a.sha256 == b.sha256
