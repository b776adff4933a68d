"""Depth pruning removes whole blocks: knobs only on identity-skippable blocks, tensors gone."""
import numpy as np
import pytest
import torch

from autocompress.backends.ort_runner import make_session, run_batches
from autocompress.compression.apply import apply_plan, compress_torch
from autocompress.compression.structural.depth import Dropped, drop_knobs
from autocompress.compression.knobs import skipped_knobs, torch_knobs
from autocompress.compression.plan import DROP, PRUNE_RATIO, RANK_RATIO, Plan
from tests.tiny_transformer import make_tiny_transformer
from tests.fixture_models import residual_cnn_workload


def args_of(workload):
    return [torch.from_numpy(workload.example[n]) for n in workload.input_names]


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_only_shape_preserving_blocks_get_a_drop_knob():
    workload = residual_cnn_workload()
    knobs, skips = drop_knobs(workload.model, args_of(workload))
    assert [k.unit for k in knobs] == ["1.0", "1.2"]
    assert all(k.choices == (False, True) for k in knobs)
    assert [s.unit for s in skips] == ["1", "1.1"]
    assert "'1.1'" in skips[1].message() and "depth pruning" in skips[1].message()
    assert "[1, 16, 6, 6]" in skips[1].reason and "[1, 8, 12, 12]" in skips[1].reason


def test_dropped_block_is_gone_from_model_and_file(tmp_path):
    workload = residual_cnn_workload()
    block = workload.model[1][2]
    plan = Plan({"1.2": {DROP: True}})
    model = compress_torch(plan, workload)
    assert isinstance(model[1][2], Dropped)
    assert n_params(model) == n_params(workload.model) - n_params(block) == n_params(workload.model) - 2592
    base = apply_plan(Plan(), workload, tmp_path / "base.onnx")
    dropped = apply_plan(plan, workload, tmp_path / "drop.onnx")
    assert base.n_params - dropped.n_params == 16 * 16 * 9 + 16 + 16 * 16 + 16
    assert dropped.size_bytes < base.size_bytes - 4 * 2592
    x = torch.from_numpy(workload.evaluation[0]["image"])
    with torch.no_grad():
        m = workload.model
        expected = m[4](m[3](m[2](m[1][1](m[1][0](m[0](x))))))
    got = run_batches(make_session(dropped.path), workload.evaluation)[0][0]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_transformer_layers_drop_and_pruning_inside_is_harmless(tmp_path):
    workload = make_tiny_transformer()
    layer_params = n_params(workload.model.layers[1])
    base = apply_plan(Plan(), workload, tmp_path / "base.onnx")
    plan = Plan({"layers.1": {DROP: True}, "layers.1.attention": {PRUNE_RATIO: 0.5},
                 "layers.1.ffn.fc1": {RANK_RATIO: 0.5}})
    dropped = apply_plan(plan, workload, tmp_path / "drop.onnx")
    # q/k/v/o + two LayerNorms + fc1 + fc2
    assert base.n_params - dropped.n_params == layer_params == (
        4 * (32 * 32 + 32) + 2 * (2 * 32) + (32 * 64 + 64) + (64 * 32 + 32))
    assert dropped.size_bytes < base.size_bytes
    assert len(compress_torch(plan, workload).layers) == 3   # names of the other layers stay
    ref = run_batches(make_session(base.path), workload.evaluation)[0][0]
    out = run_batches(make_session(dropped.path), workload.evaluation)[0][0]
    assert np.abs(out - ref).max() > 1e-3


def test_builtin_knobs_name_blocks():
    workload = make_tiny_transformer()
    knobs = torch_knobs(workload.model, args_of(workload), workload.input_names)
    assert [k.unit for k in knobs if k.name == DROP] == ["layers.0", "layers.1", "layers.2"]


@pytest.mark.parametrize("units", [["layers.0", "layers.1", "layers.2"]])
def test_dropping_every_layer_still_exports(tmp_path, units):
    workload = make_tiny_transformer()
    artifact = apply_plan(Plan({u: {DROP: True} for u in units}), workload, tmp_path / "a.onnx")
    out = run_batches(make_session(artifact.path), workload.evaluation)[0][0]
    assert out.shape == (16, 32) and np.isfinite(out).all()


def test_digits_cnn_offers_only_its_residual_blocks():
    from autocompress.workloads.digits_cnn import make_digits_workload

    workload = make_digits_workload()
    knobs, skips = drop_knobs(workload.model, args_of(workload))
    assert [k.unit for k in knobs] == ["blocks.0", "blocks.2", "blocks.4"]
    assert {s.unit for s in skipped_knobs(workload.model, args_of(workload))
            if s.technique == "depth pruning"} == {"blocks.1", "blocks.3", "blocks.5"}
