"""Cross-layer sharing: one block's weights serve several layers and the file holds them once."""
import numpy as np
import onnx
import torch
from torch import nn

from autocompress.backends.onnx_export import export_onnx
from autocompress.backends.ort_runner import make_session, run_batches
from autocompress.compression.apply import apply_plan, compress_torch
from autocompress.compression.initializers import match_initializers
from autocompress.compression.plan import DROP, QUANT, RANK_RATIO, SHARE, Plan
from autocompress.compression.weights.quantize import to_opset
from autocompress.compression.structural.sharing import share_knobs
from tests.fixture_models import residual_cnn_workload
from tests.tiny_transformer import make_tiny_transformer

LAYER = 4 * (32 * 32 + 32) + 2 * (2 * 32) + (32 * 64 + 64) + (64 * 32 + 32)   # 8544


def args_of(workload):
    return [torch.from_numpy(workload.example[n]) for n in workload.input_names]


def test_knobs_on_every_layer_after_the_first():
    workload = make_tiny_transformer(layers=4)
    knobs, skips = share_knobs(workload.model, args_of(workload))
    assert [k.unit for k in knobs] == ["layers.1", "layers.2", "layers.3"]
    assert skips == []


def test_differing_blocks_are_skipped_with_a_reason():
    workload = residual_cnn_workload()
    knobs, skips = share_knobs(workload.model, args_of(workload))
    assert knobs == []
    reasons = {s.unit: s.reason for s in skips}
    assert reasons["1.1"] == "input/output shapes differ from '1.0'"
    assert reasons["1.2"] == "input/output shapes differ from '1.1'"


def test_shared_layers_are_one_module_and_stored_once(tmp_path):
    workload = make_tiny_transformer()
    plan = Plan({"layers.1": {SHARE: True}, "layers.2": {SHARE: True}})
    model = compress_torch(plan, workload)
    assert model.layers[1] is model.layers[0] and model.layers[2] is model.layers[0]
    base = apply_plan(Plan(), workload, tmp_path / "base.onnx")
    shared = apply_plan(plan, workload, tmp_path / "shared.onnx")
    assert base.n_params - shared.n_params == 2 * LAYER
    assert base.size_bytes - shared.size_bytes > 0.95 * 4 * 2 * LAYER   # graph nodes stay
    proto = onnx.load(str(shared.path))
    assert len({i.name for i in proto.graph.initializer}) == len(proto.graph.initializer)
    ref = run_batches(make_session(base.path), workload.evaluation)[0][0]
    out = run_batches(make_session(shared.path), workload.evaluation)[0][0]
    assert np.abs(out - ref).max() > 1e-3
    with torch.no_grad():   # the shared model is exactly: layer 0 applied three times
        batch = workload.evaluation[0]
        ids, mask = (torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask"))
        bias = (1.0 - mask.float())[:, None, None, :] * -1e4
        x = workload.model.embeddings(ids)
        for _ in range(3):
            x = workload.model.layers[0](x, bias)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        expected = nn.functional.normalize(pooled, dim=1)
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-4)


def test_shared_block_follows_the_first_blocks_compression(tmp_path):
    workload = make_tiny_transformer()
    plan = Plan({"layers.0.ffn.fc1": {RANK_RATIO: 0.5, QUANT: "w8"}, "layers.1": {SHARE: True},
                 "layers.1.ffn.fc1": {RANK_RATIO: 0.25}})
    model = compress_torch(plan, workload)
    assert model.layers[1] is model.layers[0]
    assert model.layers[1].ffn.fc1[0].out_features == 16   # layer 0's rank 0.5, not layer 1's
    exported = to_opset(export_onnx(model, workload))
    units = set(match_initializers(exported, model).values())
    assert "layers.0.ffn.fc1" in units and not any(u.startswith("layers.1.") for u in units)
    # the shared factors (read through Identity aliases) are stored once, in w8 codes
    proto = onnx.load(str(apply_plan(plan, workload, tmp_path / "a.onnx").path))
    fc1 = [n for n, u in match_initializers(exported, model).items() if u == "layers.0.ffn.fc1"]
    stored = {i.name for i in proto.graph.initializer}
    assert len(fc1) == 2 and all(f"{n}_codes_codes" in stored and n not in stored for n in fc1)


def test_sharing_with_a_dropped_layer_is_ignored(tmp_path):
    workload = make_tiny_transformer()
    base = apply_plan(Plan(), workload, tmp_path / "base.onnx")
    plan = Plan({"layers.1": {DROP: True}, "layers.2": {SHARE: True}})
    artifact = apply_plan(plan, workload, tmp_path / "a.onnx")
    assert base.n_params - artifact.n_params == LAYER      # only the dropped layer went
    model = compress_torch(plan, workload)
    assert model.layers[2] is not model.layers[0]
