"""Per-layer weight bit widths 2/3/4/8/16 and calibrated static int8: real packed bytes,
ONNX Runtime outputs equal to a numpy/torch reference of the same quantized weights."""
import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from autocompress.backends.ort_runner import make_session, run_batches
from autocompress.compression.weights import packing
from autocompress.compression.apply import PlanError, apply_plan
from autocompress.compression.knobs import onnx_knobs, skipped_knobs, torch_knobs
from autocompress.compression.plan import Plan
from autocompress.compression.weights.storage import packed_reference
from autocompress.cost_models.layers import describe
from tests.tiny_workload import N_FC1, make_workload, torch_outputs
from tests.tiny_workload import onnx_outputs as outputs



@pytest.fixture(scope="module")
def tiny():
    return make_workload()


def initializers(path):
    return {i.name: i for i in onnx.load(str(path)).graph.initializer}


def fc1_weight_kn(workload):
    return workload.model.fc1.weight.detach().numpy().T.copy()


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_codes_is_dense_and_lossless(bits):
    codes = np.random.default_rng(bits).integers(0, 2 ** bits, 1001)
    packed = packing.pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == -(-1001 * bits // 8)
    np.testing.assert_array_equal(packing.unpack_codes(packed, 1001, bits), codes)


@pytest.mark.parametrize("bits,sparse", [(2, False), (3, True), (6, False), (8, True)])
def test_in_graph_unpacking_matches_numpy_in_onnx_runtime(bits, sparse):
    rng = np.random.default_rng(0)
    shape = (37, 29)   # odd sizes: padding and slicing paths
    mask = rng.random(shape) > 0.6 if sparse else None
    n = int(mask.sum()) if sparse else 37 * 29
    codes = rng.integers(0, 2 ** bits, n)
    lut = rng.standard_normal(2 ** bits).astype(np.float32)
    enc = packing.encode("W", shape, codes=codes, bits=bits, lut=lut, mask=mask)
    graph = helper.make_graph(enc.nodes + [helper.make_node("Identity", ["W"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              enc.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(model)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]
    expected = np.zeros(shape, np.float32)
    if sparse:
        expected[mask] = lut[codes]
    else:
        expected = lut[codes].reshape(shape)
    np.testing.assert_array_equal(got, expected)
    packed = enc.initializers[[i.name for i in enc.initializers].index("W_codes")]
    assert len(packed.raw_data) == -(-n * bits // 8)


@pytest.mark.parametrize("quant,bits", [("w2", 2), ("w3", 3)])
def test_low_bit_weights_are_packed_and_match_the_reference(tmp_path, tiny, quant, bits):
    float_art = apply_plan(Plan(), tiny, tmp_path / "f.onnx")
    art = apply_plan(Plan({"fc1": {"quant": quant}}), tiny, tmp_path / "q.onnx")
    inits = initializers(art.path)
    codes = [i for n, i in inits.items() if n.endswith("_codes_codes")]
    assert len(codes) == 1 and codes[0].data_type == TensorProto.UINT8
    assert len(codes[0].raw_data) == N_FC1 * bits // 8
    scales = [i for n, i in inits.items() if n.endswith("_scale16")]
    assert scales[0].data_type == TensorProto.FLOAT16 and np.prod(scales[0].dims) == 2 * 128  # 2 blocks of 32 rows
    # the float fc1 (32768 bytes) is gone; codes + fp16 scales + the rebuild graph (< 2 KB) remain
    saved = float_art.size_bytes - art.size_bytes
    assert 4 * N_FC1 - N_FC1 * bits // 8 - 512 - 2000 < saved < 4 * N_FC1 - N_FC1 * bits // 8 - 512
    model = copy.deepcopy(tiny.model)
    model.fc1.weight.data = torch.from_numpy(packed_reference(fc1_weight_kn(tiny), bits, "matmul").T.copy())
    np.testing.assert_allclose(outputs(art.path, tiny), torch_outputs(model, tiny), atol=1e-4)


def test_fp16_weights_take_two_bytes(tmp_path, tiny):
    art = apply_plan(Plan({"fc1": {"quant": "w16"}, "fc2": {"quant": "w16"}}), tiny, tmp_path / "h.onnx")
    halves = [i for i in initializers(art.path).values() if i.data_type == TensorProto.FLOAT16]
    assert sorted(len(h.raw_data) for h in halves) == [2 * N_FC1, 2 * N_FC1]
    model = copy.deepcopy(tiny.model)
    for layer in (model.fc1, model.fc2):
        layer.weight.data = layer.weight.data.half().float()
    np.testing.assert_allclose(outputs(art.path, tiny), torch_outputs(model, tiny), atol=1e-4)


def test_static_int8_runs_qlinear_kernels_for_every_bit_width(tmp_path, tiny):
    plan = Plan({"": {"calibration": "minmax"}, "fc1": {"quant": "w3"}, "fc2": {"quant": "w8"}})
    art = apply_plan(plan, tiny, tmp_path / "s.onnx")
    inits = initializers(art.path)
    packed = inits["onnx::MatMul_0_quantized_codes"] if "onnx::MatMul_0_quantized_codes" in inits else \
        next(i for n, i in inits.items() if n.endswith("_quantized_codes"))
    assert len(packed.raw_data) == N_FC1 * 3 // 8
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(art.path), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("QLinearMatMul") == 2, ops
    assert tiny.score(run_batches(make_session(art.path), tiny.evaluation)).value > 0.8
    layers = describe(art.path, {"x": (1, 64)}).layers
    assert [layer.dtype for layer in layers] == ["int8", "int8", "fp32"]


def test_calibration_methods_give_different_activation_ranges(tmp_path):
    """Percentile and entropy clip what min-max keeps: every activation range is at most
    min-max's, and each method gives its own set of ranges."""
    from autocompress.compression.weights.knobs import torch_weight_knobs, uniform_plan
    from tests.fixture_models import small_cnn_workload

    workload = small_cnn_workload()
    knobs, _ = torch_weight_knobs(workload.model)
    scales = {}
    for method in ("minmax", "percentile", "entropy"):
        art = apply_plan(uniform_plan(knobs, quant="w8", calibration=method), workload,
                         tmp_path / f"{method}.onnx")
        model = onnx.load(str(art.path))
        inits = {i.name: i for i in model.graph.initializer}
        scales[method] = np.array([float(numpy_helper.to_array(inits[n.input[1]]))
                                   for n in model.graph.node if n.op_type == "QuantizeLinear"])
    assert len(scales["minmax"]) >= 8
    for method in ("percentile", "entropy"):
        assert np.all(scales[method] <= scales["minmax"] * (1 + 1e-6))
        assert np.sum(scales[method] < scales["minmax"] * 0.99) >= 3
    assert not np.array_equal(scales["percentile"], scales["entropy"])


def test_static_plans_give_the_same_bytes(tmp_path, tiny):
    plan = Plan({"": {"calibration": "entropy"}, "fc1": {"quant": "w2", "sparsity": 0.5},
                 "fc2": {"quant": "w8a8"}})
    a = apply_plan(plan, tiny, tmp_path / "a.onnx")
    b = apply_plan(plan, tiny, tmp_path / "b.onnx")
    assert a.sha256 == b.sha256


def test_cost_model_reads_packed_weights_as_the_float_ort_builds(tmp_path, tiny):
    art = apply_plan(Plan({"fc1": {"quant": "w2"}}), tiny, tmp_path / "q.onnx")
    graph = describe(art.path, {"x": (1, 64)})
    assert [layer.op for layer in graph.layers] == ["MatMul", "MatMul", "MatMul"]
    assert graph.layers[0].weight_bytes == 4 * N_FC1 and graph.layers[0].macs == N_FC1
    assert graph.peak_activation_bytes < 4 * N_FC1   # the unpacking chain is not an activation


def test_knobs_offer_low_bits_only_where_packing_pays(tiny):
    knobs = {k.key: k for k in torch_knobs(tiny.model, [torch.from_numpy(tiny.example["x"])])}
    assert {"w16", "w3", "w2"} <= set(knobs["fc1:quant"].choices)
    assert "w2" not in knobs["head:quant"].choices   # 640 weights
    assert knobs[":calibration"].choices == ("none", "minmax", "percentile", "entropy")
    skips = [s.message() for s in skipped_knobs(tiny.model, [torch.from_numpy(tiny.example["x"])])]
    assert any("2/3-bit quantization not offered for 'head'" in m for m in skips)
    onnx_side = {k.key for k in onnx_knobs({"w": ("matmul", (64, 128))})}
    assert onnx_side == {"w:quant", "w:sparsity", "w:clusters", ":calibration"}


def test_every_bit_width_runs_on_an_onnx_file_workload(tmp_path, tiny):
    from autocompress.workloads.onnx_file import load_onnx_workload

    apply_plan(Plan(), tiny, tmp_path / "user.onnx")
    workload = load_onnx_workload(tmp_path / "user.onnx")
    names = [i.name for i in onnx.load(str(tmp_path / "user.onnx")).graph.initializer
             if len(i.dims) == 2]
    for quant in ("w16", "w8", "w4", "w3", "w2"):
        plan = Plan({"": {"calibration": "percentile"}, **{n: {"quant": quant} for n in names}})
        art = apply_plan(plan, workload, tmp_path / f"{quant}.onnx")
        assert workload.score(run_batches(make_session(art.path), workload.evaluation)).value > 0.5


def test_unknown_settings_are_plan_errors(tmp_path, tiny):
    with pytest.raises(PlanError, match="calibration"):
        apply_plan(Plan({"": {"calibration": "magic"}}), tiny, tmp_path / "x.onnx")
    with pytest.raises(PlanError, match="quant"):
        apply_plan(Plan({"fc1": {"quant": "w5"}}), tiny, tmp_path / "x.onnx")


def test_conv_layers_take_every_technique(tmp_path):
    """Convs (grouped ones too): packed w3 equals the torch reference; static int8 turns
    into QLinearConv; clusters and sparsity apply where offered."""
    from autocompress.compression.apply import compress_torch
    from autocompress.compression.weights.knobs import torch_weight_knobs, uniform_plan
    from tests.fixture_models import small_cnn_workload

    workload = small_cnn_workload()
    knobs, _ = torch_weight_knobs(workload.model)
    plan = uniform_plan(knobs, quant="w3")
    art = apply_plan(plan, workload, tmp_path / "w3.onnx")
    model = compress_torch(Plan(), workload)   # BatchNorm folded, as exported
    modules = dict(model.named_modules())
    for unit in plan.units:
        conv = modules[unit]
        if isinstance(conv, torch.nn.Conv2d):
            conv.weight.data = torch.from_numpy(packed_reference(conv.weight.detach().numpy(), 3, "conv"))
    with torch.no_grad():
        expected = model(torch.from_numpy(workload.evaluation[0]["image"])).numpy()
    got = run_batches(make_session(art.path), workload.evaluation)[0][0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    mixed = {**uniform_plan(knobs, quant="w4", calibration="percentile").units,
             **uniform_plan(knobs, clusters=16, sparsity=0.5).units}
    art = apply_plan(Plan(mixed), workload, tmp_path / "mixed.onnx")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(art.path), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "QLinearConv" in ops
    assert run_batches(make_session(art.path), workload.evaluation)[0][0].shape == (8, 10)


def cpu_has_int8_dot_product():
    """VNNI (AVX-512 or AVX) gives ORT u8s8 kernels that never saturate; AVX2 alone does not."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return True
    return "avx512_vnni" in text or "avx_vnni" in text


def _int8_matmuls(quant: str, tiny, tmp_path, ref):
    """Both MatMuls of the tiny MLP in ``quant``: fc1's stored scale and codes, and the
    artifact's largest output error against ``ref``."""
    artifact = apply_plan(Plan({"fc1": {"quant": quant}, "fc2": {"quant": quant}}), tiny,
                          tmp_path / f"{quant}.onnx")
    model = onnx.load(str(artifact.path))
    assert sum(n.op_type == "MatMulInteger" for n in model.graph.node) == 2
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    error = float(np.abs(outputs(artifact.path, tiny) - ref).max())
    return inits["fc1.weight_scale"], inits["fc1.weight_quantized"], error


def test_per_channel_dynamic_int8_keeps_seven_bits_per_column(tmp_path, tiny):
    """w8a8c: ORT's dynamic int8 with one weight scale per output column, weights kept in
    [-64, 64]. On any CPU it stays within 1% of float; on AVX2 without VNNI, where w8a8's
    u8s8 sums saturate, it is also closer to float than w8a8 (with VNNI the extra bit of
    w8a8 wins, so that comparison holds only where saturation exists)."""
    ref, errors = torch_outputs(tiny.model, tiny), {}
    for quant in ("w8a8", "w8a8c"):
        scale, q, errors[quant] = _int8_matmuls(quant, tiny, tmp_path, ref)
        if quant == "w8a8c":
            assert scale.shape == (q.shape[1],)            # one scale per output column
            assert np.abs(q.astype(int)).max() == 64      # 7-bit symmetric range
        else:
            assert scale.shape == () and np.abs(q).max() == 127
    assert errors["w8a8c"] < 0.01 * float(np.abs(ref).max())
    if not cpu_has_int8_dot_product():
        assert errors["w8a8c"] < errors["w8a8"]


def test_full_range_per_channel_int8_uses_all_eight_bits(tmp_path, tiny):
    """w8a8cf: one weight scale per output column and the full [-127, 127] in each column (the
    stored codes, the same on any CPU). Where the CPU has int8 dot products (VNNI), ORT
    computes it exactly, and it is closer to float than the 7-bit w8a8c."""
    ref, errors = torch_outputs(tiny.model, tiny), {}
    for quant in ("w8a8c", "w8a8cf"):
        scale, q, errors[quant] = _int8_matmuls(quant, tiny, tmp_path, ref)
        assert scale.shape == (q.shape[1],)
        column_max = np.abs(q.astype(int)).max(axis=0)
        assert (column_max == (127 if quant == "w8a8cf" else 64)).all()
    if cpu_has_int8_dot_product():
        assert errors["w8a8cf"] < errors["w8a8c"]


def test_per_channel_dynamic_int8_is_offered_for_matmuls_only():
    from autocompress.compression.weights.knobs import layer_weight_knobs

    def quant_choices(kind):
        return next(k for k in layer_weight_knobs("u", kind, (64, 64))[0] if k.name == "quant").choices

    for quant in ("w8a8c", "w8a8cf"):
        assert quant in quant_choices("matmul")
        assert quant not in quant_choices("conv") and quant not in quant_choices("gather")


def test_int8_table_keeps_one_scale_per_block_of_rows():
    """An embedding table's 8-bit rows share a scale and offset per TABLE_BLOCK_ROWS rows (a
    scale per row cost MiniLM 122 kB); ONNX Runtime gathers exactly the blocked reference,
    int32 ids and the short last block included."""
    from autocompress.compression.weights.quantize import TABLE_BLOCK_ROWS, table_int8
    from autocompress.compression.weights.storage import WeightPlan, compress_weights

    rows = 2 * TABLE_BLOCK_ROWS + 5
    table = np.random.default_rng(0).standard_normal((rows, 8)).astype(np.float32)
    table[TABLE_BLOCK_ROWS:2 * TABLE_BLOCK_ROWS] *= 100     # a block of large rows
    table[2 * TABLE_BLOCK_ROWS:] += 3                         # a short block away from zero
    ids = helper.make_tensor_value_info("ids", TensorProto.INT32, [None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(
        helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"], name="g")],
                          "g", [ids], [y], [numpy_helper.from_array(table, "table")]),
        opset_imports=[helper.make_opsetid("", 21)])
    stored = compress_weights(model, {"table": WeightPlan(quant="w8")})
    inits = {i.name: numpy_helper.to_array(i) for i in stored.graph.initializer}
    assert inits["table_q"].dtype == np.uint8 and inits["table_scale"].size == 3
    codes, scale, offset = table_int8(table)
    each = np.arange(rows) // TABLE_BLOCK_ROWS
    reference = codes.astype(np.float32) * scale[each, None] + offset[each, None]
    # within half a step of its own block's grid: the small rows are not on the large grid
    assert (np.abs(reference - table) <= scale[each, None] * 0.5001).all()
    assert np.abs(reference[:TABLE_BLOCK_ROWS] - table[:TABLE_BLOCK_ROWS]).max() < 0.02
    picked = np.array([0, TABLE_BLOCK_ROWS - 1, TABLE_BLOCK_ROWS, rows - 1, 3], np.int32)
    session = ort.InferenceSession(stored.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"ids": picked})[0], reference[picked])
