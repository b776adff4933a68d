"""The host TVM library vs ONNX Runtime (backends/tvm_check.py): the graph's arithmetic
exactly, teacher-forced where activations are requantized, and the workload's quality.

Nothing here asserts a CPU-specific number: ORT's int8 kernels differ between AVX2 and
AVX-512 VNNI machines, and whether a value lands a few ulps from a rounding boundary depends
on the kernels' summation order."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from autocompress.backends import tvm_check, tvm_compile, tvm_prepare
from autocompress.compression.apply import apply_plan
from autocompress.device_profiles import resolve_target


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))


def _uniform(**knobs):
    from autocompress.compression.weights.knobs import torch_weight_knobs, uniform_plan

    return lambda w: uniform_plan(torch_weight_knobs(w.model)[0], **knobs)


def _transformer():
    from tests.tiny_transformer import make_tiny_transformer

    return make_tiny_transformer()


def _mlp():
    from tests.tiny_workload import make_workload

    return make_workload()


CASES = {   # the formats whose activations are requantized, on a MiniLM stand-in too
    "transformer-w8a8c": (_transformer, _uniform(quant="w8a8c")),
    "transformer-static-qdq": (_transformer, _uniform(quant="w8", calibration="minmax")),
    "mlp-static-qdq": (_mlp, _uniform(quant="w8", calibration="minmax")),
}
# conv w8a8 (ConvInteger, full-range int8 weights) is left to the op test below: ORT's u8s8
# kernels on x86 without VNNI may saturate there, so ORT is no reference on every CPU.


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("agreement")
    built = {}
    for name, (make, plan) in CASES.items():
        workload = make()
        built[name] = (workload, apply_plan(plan(workload), workload, folder / f"{name}.onnx").path)
    return built


def _compare(workload, path, **kwargs):
    shapes = {k: v.shape for k, v in workload.example.items()}
    library = tvm_compile.compile_onnx(path, shapes, resolve_target("host"), use_tuning=False)
    return tvm_check.compare(library.path, path, workload.evaluation, workload.input_names,
                             shapes, **kwargs)


def test_only_quantizers_of_computed_tensors_are_cut(artifacts):
    _, path = artifacts["mlp-static-qdq"]
    model = onnx.load(str(path))
    found = tvm_check.requantizers(model)
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert found and all(n.op_type == "QuantizeLinear" for n in found)
    # the model input's own quantizer reads the same floats in both runtimes: not cut
    assert [n for n in quantizers if n.input[0] == "x"] and all(n.input[0] != "x" for n in found)
    assert len(found) == len(quantizers) - 1


@pytest.mark.parametrize("name", list(CASES))
def test_requantized_formats_compute_the_graphs_arithmetic_segment_by_segment(artifacts, cache,
                                                                             name):
    workload, path = artifacts[name]
    agreement = _compare(workload, path, score=workload.score)
    assert agreement.requantized >= 1
    assert agreement.forced_inputs == agreement.inputs >= 8
    assert agreement.mismatched_codes == 0, agreement.describe()
    assert agreement.forced <= tvm_check.EXACT_TOLERANCE, agreement.describe()
    assert agreement.quality_gap <= tvm_check.QUALITY_TOLERANCE, agreement.describe()
    assert agreement.ok


def test_a_quantizer_that_tvm_gets_wrong_fails_the_check(artifacts, cache, monkeypatch):
    """A frontend that shifted activation zero points by one code is caught by the probes
    (TVM's quantizer on ORT's floats), though end to end the shift nearly cancels in the
    DequantizeLinear that reads the same zero point."""
    workload, path = artifacts["transformer-static-qdq"]
    prepare = tvm_prepare.prepare

    def shifted(model, shapes):
        model = prepare(model, shapes)
        for init in model.graph.initializer:
            value = numpy_helper.to_array(init)
            if value.dtype == np.uint8 and value.ndim == 0 and "zero_point" in init.name:
                init.CopyFrom(numpy_helper.from_array(np.uint8(min(int(value) + 1, 255)), init.name))
        return model

    monkeypatch.setattr(tvm_prepare, "prepare", shifted)
    agreement = _compare(workload, path)
    assert agreement.mismatched_codes > 0
    assert not agreement.ok


def test_weight_only_int4_keeps_the_searchs_quality(tmp_path, cache):
    """ORT's optimized session runs w4 as MatMulNBits with int8 activations; TVM computes the
    dequantized graph exactly. The quality criterion compares what a user sees."""
    workload = _transformer()
    path = apply_plan(_uniform(quant="w4")(workload), workload,
                      tmp_path / "w4.onnx").path
    agreement = _compare(workload, path, score=workload.score)
    assert agreement.requantized == 0 and agreement.exact <= tvm_check.EXACT_TOLERANCE
    assert agreement.quality_gap <= tvm_check.QUALITY_TOLERANCE
    assert agreement.quality_graph is not None and agreement.ok


def test_ok_needs_the_exact_and_the_quality_criterion():
    exact = dict(exact=0.1, optimized=0.1, inputs=4, forced=1e-7, requantized=3)
    assert tvm_check.Agreement(**exact).ok            # end to end past a boundary: reported
    assert not tvm_check.Agreement(**{**exact, "mismatched_codes": 1}).ok
    assert not tvm_check.Agreement(**{**exact, "forced": 1e-3}).ok
    assert not tvm_check.Agreement(exact=1e-3, optimized=0.0, inputs=4).ok
    good = tvm_check.Agreement(exact=0.0, optimized=0.03, inputs=4, quality=0.95,
                               quality_ort=0.951, quality_graph=0.95)
    assert good.ok and "0.9500 vs ORT 0.9510" in good.describe()
    assert not tvm_check.Agreement(exact=0.0, optimized=0.0, inputs=4, quality=0.9,
                                   quality_ort=0.95).ok


# ------------------------------------------------------------------ op semantics


def _run_graph(tmp_path, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, list(v.shape))
                                           for n, (t, v) in inputs.items()],
                              [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
                              list(initializers))
    path = tmp_path / "op.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    shapes = {n: v.shape for n, (_, v) in inputs.items()}
    library = tvm_compile.compile_onnx(path, shapes, resolve_target("host"), use_tuning=False)
    return tvm_compile.run_local(library.path, {n: v for n, (_, v) in inputs.items()},
                                 list(inputs))


@pytest.mark.parametrize("dtype,zero,low,high", [(TensorProto.UINT8, 10, 0, 255),
                                                 (TensorProto.INT8, -3, -128, 127)])
def test_tvm_quantize_linear_rounds_half_to_even_and_saturates(tmp_path, cache, dtype, zero,
                                                               low, high):
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.4999998, 1e4, -1e4], np.float32)
    y = _run_graph(tmp_path, [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])],
                   {"x": (TensorProto.FLOAT, x)}, [("y", dtype)],
                   [numpy_helper.from_array(np.float32(1.0), "s"),
                    helper.make_tensor("z", dtype, [], [zero])])[0]
    np.testing.assert_array_equal(y, np.clip(np.rint(x) + zero, low, high))


def test_tvm_dynamic_quantize_linear_follows_the_onnx_formula(tmp_path, cache):
    """scale = (max(x, 0) - min(x, 0)) / 255, zero point rounded half to even: -2.5 -> 2."""
    x = np.array([-2.5, 252.5, 1.5, 3.0], np.float32)
    y, scale, zero = _run_graph(
        tmp_path, [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])],
        {"x": (TensorProto.FLOAT, x)},
        [("y", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8)])
    assert float(scale) == 1.0 and int(zero) == 2
    np.testing.assert_array_equal(y, [0, 254, 4, 5])


def test_tvm_matmul_integer_subtracts_per_column_zero_points(tmp_path, cache):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 16)).astype(np.uint8)
    b = rng.integers(-128, 128, (16, 5)).astype(np.int8)
    b_zero = np.array([0, 1, -2, 3, -4], np.int8)
    out = _run_graph(tmp_path, [helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])],
                     {"a": (TensorProto.UINT8, a)}, [("y", TensorProto.INT32)],
                     [numpy_helper.from_array(b, "b"), numpy_helper.from_array(np.uint8(7), "az"),
                      numpy_helper.from_array(b_zero, "bz")])[0]
    expected = (a.astype(np.int32) - 7) @ (b.astype(np.int32) - b_zero.astype(np.int32))
    np.testing.assert_array_equal(out, expected)


def test_conv_integer_rewrite_pads_with_the_zero_point(tmp_path, cache):
    """tvm_prepare's ConvInteger -> int32 Conv, per-channel weight zero points, against the
    definition computed here (padding reads x's zero point: centred value 0)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, 2, 5, 5)).astype(np.uint8)
    w = rng.integers(-128, 128, (3, 2, 3, 3)).astype(np.int8)
    w_zero = np.array([0, 2, -1], np.int8)
    out = _run_graph(tmp_path, [helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"],
                                                 pads=[1, 1, 1, 1])],
                     {"x": (TensorProto.UINT8, x)}, [("y", TensorProto.INT32)],
                     [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.uint8(9), "xz"),
                      numpy_helper.from_array(w_zero, "wz")])[0]
    centred = np.pad(x.astype(np.int64) - 9, ((0, 0), (0, 0), (1, 1), (1, 1)))
    kernel = w.astype(np.int64) - w_zero.reshape(3, 1, 1, 1)
    expected = np.zeros((1, 3, 5, 5), np.int64)
    for i in range(5):
        for j in range(5):
            expected[0, :, i, j] = np.tensordot(kernel, centred[0, :, i:i + 3, j:j + 3], 3)
    np.testing.assert_array_equal(out, expected)
