"""Quantization of an ONNX graph, per weight, stored for real in low-bit form.

- ``w8``/``w4``: weight-only. The float initializer is replaced by an INT8/INT4
  initializer (INT4 packed two per byte) and a DequantizeLinear node; ONNX Runtime
  fuses DequantizeLinear+MatMul into its MatMulNBits kernel.
- ``w8a8``: weights and activations int8 through ONNX Runtime's own dynamic
  quantizer (MatMulInteger / ConvInteger kernels).
- Embedding tables (Gather): 8-bit rows, one scale and offset per block of
  :data:`TABLE_BLOCK_ROWS` rows, gathered then rebuilt.
- ``w16``, ``w3``, ``w2`` and every sparse or clustered weight: see :mod:`.weight_storage`.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

OPSET = 21              # INT4 and blocked DequantizeLinear need opset 21
INT4_BLOCK = 32         # rows of a [K, N] MatMul weight sharing one INT4 scale
TABLE_BLOCK_ROWS = 128
"""Consecutive embedding rows sharing one 8-bit scale and offset. One scale per row cost 4
bytes of every row (MiniLM's 384-wide table: 122 kB, more than the 0.45% by which its int8
file exceeded ONNX Runtime's per-channel one, which keeps one scale per table); per block
of 128 rows the scales take 1.9 kB. On MiniLM with w8a8cf MatMuls, blocks of 1 / 8 / 32 /
128 rows and one per table all score cosine 0.9928-0.9931, within rounding noise
(``benchmarks/int8_parity.py --table-blocks 1,8,32,128,0``)."""


def to_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Bring an exported model to :data:`OPSET` and rewrite Gemm as MatMul + Add."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET)
    if current < OPSET:
        model = version_converter.convert_version(model, OPSET)
    _gemm_to_matmul(model.graph)
    return model


def _gemm_to_matmul(graph: onnx.GraphProto, inits: dict | None = None,
                    readers: dict | None = None) -> None:
    """Gemm(A, B, C) with a constant B read by nothing else becomes MatMul(A, B') + C: one
    weight layout [K, N]. Subgraphs too (their B may be a main-graph initializer)."""
    from .onnx_graph import subgraphs, uses

    inits = {i.name: i for i in graph.initializer} if inits is None else inits
    readers = uses(graph) if readers is None else readers
    nodes = []
    for node in graph.node:
        for sub in subgraphs(node):
            _gemm_to_matmul(sub, {**inits, **{i.name: i for i in sub.initializer}}, readers)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0
                or len(readers.get(node.input[1], ())) > 1):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(
                np.ascontiguousarray(weight.T), node.input[1]))
        has_bias = len(node.input) > 2 and node.input[2]
        product = node.output[0] + "_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], node.input[1]], [product],
                                      name=node.name + "_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                                          name=node.name + "_bias"))
    del graph.node[:]
    graph.node.extend(nodes)


def weight_initializers(model: onnx.ModelProto) -> list[str]:
    """Initializers read as weights (what weight storage can act on; subgraphs and
    recurrent ops included, see :mod:`.onnx_graph`)."""
    from .onnx_graph import weights

    return list(weights(model))


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def quantize_dynamic_nodes(model: onnx.ModelProto, node_names: list[str],
                      per_channel: bool = False, reduce_range: bool = False) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
        onnx.save(model, src)
        # per-channel weights fill [-127, 127] in every column: on x86 without VNNI, ORT's
        # u8s8 kernels then saturate int16 pair sums; reduce_range keeps 7 bits (w8a8c)
        quantize_dynamic(src, dst, nodes_to_quantize=node_names, per_channel=per_channel,
                         reduce_range=reduce_range,
                         weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Conv"])
        return onnx.load(dst)


def weight_only(graph, init: TensorProto, bits: int, kind: str, consumers: list) -> None:
    """INT8/INT4 + DequantizeLinear in the main graph, producing the weight's own name
    (so nodes in subgraphs read it too); embedding tables as int8 rows instead."""
    from .onnx_graph import base_kind

    weight = numpy_helper.to_array(init).astype(np.float32)
    if kind == "gather":
        return _gather_int8(graph, init, weight, consumers)
    q, scale, attrs = _quantize_array(weight, bits, layout=base_kind(kind))
    _replace_initializer(graph, init, [
        _int_tensor(init.name + "_q", q, bits),
        numpy_helper.from_array(scale, init.name + "_scale")])
    graph.node.insert(0, helper.make_node(
        "DequantizeLinear", [init.name + "_q", init.name + "_scale"], [init.name],
        name=init.name + "_dequant", **attrs))


CHANNEL_AXIS = {"matmul": 1, "conv": 0, "recurrent": 1}
"""The axis with one scale per slice: a MatMul's output column, a Conv's output channel,
a recurrent weight's gate row ([D, G*H, I])."""


def _quantize_array(weight: np.ndarray, bits: int, layout: str):
    """Symmetric quantization, one scale per :data:`CHANNEL_AXIS` slice (INT4 MatMul: per
    block of K rows, as MatMulNBits wants)."""
    qmax = 2 ** (bits - 1) - 1
    if layout == "matmul" and bits == 4 and weight.shape[0] >= INT4_BLOCK:
        k, n = weight.shape
        blocks = -(-k // INT4_BLOCK)
        padded = np.zeros((blocks * INT4_BLOCK, n), np.float32)
        padded[:k] = weight
        amax = np.abs(padded.reshape(blocks, INT4_BLOCK, n)).max(axis=1)
        scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
        q = np.round(weight / np.repeat(scale, INT4_BLOCK, axis=0)[:k])
        attrs = {"axis": 0, "block_size": INT4_BLOCK}
    else:
        axis = CHANNEL_AXIS.get(layout, 0)
        reduce = tuple(i for i in range(weight.ndim) if i != axis)
        amax = np.abs(weight).max(axis=reduce)
        scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
        shape = [1] * weight.ndim
        shape[axis] = -1
        q = np.round(weight / scale.reshape(shape))
        attrs = {"axis": axis}
    return np.clip(q, -qmax - 1, qmax).astype(np.int8), scale, attrs


def _int_tensor(name: str, q: np.ndarray, bits: int) -> TensorProto:
    if bits == 8:
        return numpy_helper.from_array(q, name)
    flat = (q.reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
    return helper.make_tensor(name, TensorProto.INT4, q.shape, packed.tobytes(), raw=True)


def table_int8(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric 8-bit rows, one (scale, offset) per block of :data:`TABLE_BLOCK_ROWS` rows
    spanning the block's [min, max] (the last block may be shorter): (uint8 codes shaped like
    ``table``, scales [blocks], offsets [blocks]); a row rebuilds as codes * scale + offset."""
    rows = table.shape[0]
    blocks = -(-rows // TABLE_BLOCK_ROWS)
    flat = table.reshape(rows, -1).astype(np.float32)
    padded = np.repeat(flat[-1:], blocks * TABLE_BLOCK_ROWS, axis=0)
    padded[:rows] = flat
    view = padded.reshape(blocks, -1)
    lo, hi = view.min(axis=1), view.max(axis=1)
    scale = np.where(hi > lo, (hi - lo) / np.float32(255), np.float32(1)).astype(np.float32)
    each = np.repeat(np.arange(blocks), TABLE_BLOCK_ROWS)[:rows]
    codes = np.round((flat - lo[each, None]) / scale[each, None])
    return (np.clip(codes, 0, 255).astype(np.uint8).reshape(table.shape), scale,
            lo.astype(np.float32))


def _gather_int8(graph, init: TensorProto, table: np.ndarray, consumers) -> None:
    """Embedding rows as 8-bit codes (:func:`table_int8`): Gather the rows and, at index //
    :data:`TABLE_BLOCK_ROWS`, their block's scale and offset; then Cast, Mul, Add. Indices
    must be non-negative (an embedding's ids are)."""
    codes, scale, offset = table_int8(table)
    column = (-1,) + (1,) * (table.ndim - 1)
    rows_per_scale = init.name + "_rows_per_scale"
    _replace_initializer(graph, init, [
        numpy_helper.from_array(codes, init.name + "_q"),
        numpy_helper.from_array(scale.reshape(column), init.name + "_scale"),
        numpy_helper.from_array(offset.reshape(column), init.name + "_offset"),
        numpy_helper.from_array(np.array(TABLE_BLOCK_ROWS, np.int64), rows_per_scale)])
    for node in consumers:
        out = node.output[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        idx = list(graph.node).index(node)
        new = [
            helper.make_node("Gather", [init.name + "_q", node.input[1]], [out + "_q"],
                             name=node.name + "_q", **attrs),
            helper.make_node("Cast", [node.input[1]], [out + "_ids"], name=node.name + "_ids",
                             to=TensorProto.INT64),
            helper.make_node("Div", [out + "_ids", rows_per_scale], [out + "_block"],
                             name=node.name + "_block"),
            helper.make_node("Gather", [init.name + "_scale", out + "_block"], [out + "_s"],
                             name=node.name + "_s", **attrs),
            helper.make_node("Gather", [init.name + "_offset", out + "_block"], [out + "_o"],
                             name=node.name + "_o", **attrs),
            helper.make_node("Cast", [out + "_q"], [out + "_f"], name=node.name + "_cast",
                             to=TensorProto.FLOAT),
            helper.make_node("Mul", [out + "_f", out + "_s"], [out + "_m"],
                             name=node.name + "_scale"),
            helper.make_node("Add", [out + "_m", out + "_o"], [out], name=node.name + "_offset"),
        ]
        graph.node.remove(node)
        for offset_, n in enumerate(new):
            graph.node.insert(idx + offset_, n)


def _replace_initializer(graph, old: TensorProto, new: list[TensorProto]) -> None:
    graph.initializer.remove(old)
    graph.initializer.extend(new)
