"""Unstructured magnitude sparsity: exact fractions, a really smaller file (1-bit mask +
kept entries), ONNX Runtime outputs equal to the dense pruned model, every combination
with quantization applies."""
import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from autocompress.backends.ort_runner import make_session, run_batches
from autocompress.compression.weights import packing
from autocompress.compression.apply import apply_plan
from autocompress.compression.knobs import skipped_knobs, torch_knobs
from autocompress.compression.plan import Plan
from autocompress.compression.weights.quantize import to_opset
from autocompress.compression.weights.sparsity import magnitude_prune, pruned_count
from autocompress.compression.weights.storage import WeightPlan, compress_weights, packed_reference
from tests.tiny_workload import N_FC1, make_workload, torch_outputs
from tests.tiny_workload import onnx_outputs as outputs



@pytest.fixture(scope="module")
def tiny():
    return make_workload()


def test_magnitude_prune_zeroes_exactly_the_smallest():
    w = np.random.default_rng(0).standard_normal((33, 31)).astype(np.float32)
    for fraction in (0.5, 0.75, 0.9):
        pruned = magnitude_prune(w, fraction)
        zeros = pruned == 0
        assert zeros.sum() == pruned_count(w.size, fraction) == round(w.size * fraction)
        assert np.abs(w[zeros]).max() <= np.abs(w[~zeros]).min()
        np.testing.assert_array_equal(pruned[~zeros], w[~zeros])


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_sparse_float_weights_shrink_the_file_and_match_torch(tmp_path, tiny, fraction):
    dense = apply_plan(Plan(), tiny, tmp_path / "d.onnx")
    art = apply_plan(Plan({"fc1": {"sparsity": fraction}}), tiny, tmp_path / "s.onnx")
    inits = {i.name: i for i in onnx.load(str(art.path)).graph.initializer}
    kept = N_FC1 - round(N_FC1 * fraction)
    mask = next(i for n, i in inits.items() if n.endswith("_mask"))
    values = next(i for n, i in inits.items() if n.endswith("_values"))
    assert mask.data_type == TensorProto.UINT8 and len(mask.raw_data) == N_FC1 // 8
    assert values.data_type == TensorProto.FLOAT and list(values.dims) == [kept]
    saved = dense.size_bytes - art.size_bytes
    expected = 4 * N_FC1 - 4 * kept - N_FC1 // 8
    assert expected - 1200 < saved < expected   # the rebuild graph costs under 1.2 KB
    model = copy.deepcopy(tiny.model)
    model.fc1.weight.data = torch.from_numpy(magnitude_prune(model.fc1.weight.detach().numpy(), fraction))
    assert (model.fc1.weight == 0).sum().item() == round(N_FC1 * fraction)
    np.testing.assert_allclose(outputs(art.path, tiny), torch_outputs(model, tiny), atol=1e-5)


@pytest.mark.parametrize("quant", ["w16", "w8", "w4", "w3", "w2", "w8a8"])
def test_sparsity_composes_with_every_quantization(tmp_path, tiny, quant):
    """The sparse store of a quantized weight rebuilds exactly the dense pruned-then-quantized one."""
    base = to_opset(onnx.load(str(apply_plan(Plan(), tiny, tmp_path / "f.onnx").path)))
    name = next(i.name for i in base.graph.initializer if tuple(i.dims) == (64, 128))
    sparse = compress_weights(copy.deepcopy(base), {name: WeightPlan(quant, 0.75)})
    dense = copy.deepcopy(base)
    init = next(i for i in dense.graph.initializer if i.name == name)
    weight = onnx.numpy_helper.to_array(init)
    init.CopyFrom(onnx.numpy_helper.from_array(magnitude_prune(weight, 0.75), name))
    if quant in ("w3", "w2"):   # dense packed storage is the reference
        dense = compress_weights(dense, {name: WeightPlan(quant)})
    elif quant in ("w8", "w4"):   # sparse w8/w4 use the packed per-block grid, not DequantizeLinear
        bits = int(quant[1:])
        init.CopyFrom(onnx.numpy_helper.from_array(
            packed_reference(magnitude_prune(weight, 0.75), bits, "matmul"), name))
    else:
        dense = compress_weights(dense, {name: WeightPlan(quant)})
    onnx.save(sparse, tmp_path / "sparse.onnx")
    onnx.save(dense, tmp_path / "dense.onnx")
    np.testing.assert_allclose(outputs(tmp_path / "sparse.onnx", tiny),
                               outputs(tmp_path / "dense.onnx", tiny), atol=1e-5)
    sparse_size, dense_size = ((tmp_path / f).stat().st_size for f in ("sparse.onnx", "dense.onnx"))
    if quant == "w2":   # 0.25 * 2 bits + a 1-bit mask saves 512 B: too little for the scatter graph
        assert sparse_size == dense_size
    else:
        assert sparse_size < dense_size


def test_sparse_static_int8_stores_codes_of_kept_weights_only(tmp_path, tiny):
    plan = Plan({"": {"calibration": "minmax"}, "fc1": {"quant": "w4", "sparsity": 0.75}})
    art = apply_plan(plan, tiny, tmp_path / "s.onnx")
    inits = {i.name: i for i in onnx.load(str(art.path)).graph.initializer}
    codes = next(i for n, i in inits.items() if n.endswith("_quantized_codes"))
    mask = next(i for n, i in inits.items() if n.endswith("_quantized_mask"))
    assert len(codes.raw_data) == (N_FC1 // 4) * 4 // 8 and len(mask.raw_data) == N_FC1 // 8
    bits = packing.unpack_codes(np.frombuffer(mask.raw_data, np.uint8), N_FC1, 1)
    assert bits.sum() == N_FC1 // 4
    assert tiny.score(run_batches(make_session(art.path), tiny.evaluation)).value > 0.8


def test_sparsity_knob_is_offered_per_layer_with_reasons(tiny):
    args = [torch.from_numpy(tiny.example["x"])]
    knobs = {k.key: k.choices for k in torch_knobs(tiny.model, args)}
    assert knobs["fc1:sparsity"] == knobs["fc2:sparsity"] == (0.0, 0.5, 0.75, 0.9)
    assert "head:sparsity" not in knobs
    messages = [s.message() for s in skipped_knobs(tiny.model, args)]
    assert "magnitude sparsity not offered for 'head': 640 weights (< 1024): saves too little" in messages


def test_grouped_convs_are_skipped_with_a_reason():
    from torch import nn

    from autocompress.compression.weights.knobs import torch_weight_knobs

    model = nn.Sequential(nn.Conv2d(64, 64, 3, groups=64), nn.Conv2d(64, 64, 3))
    knobs, skips = torch_weight_knobs(model)
    assert {k.key for k in knobs if k.name == "sparsity"} == {"1:sparsity"}
    assert any(s.unit == "0" and "grouped conv (groups=64)" in s.reason for s in skips)
