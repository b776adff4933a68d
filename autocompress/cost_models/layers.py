"""Layer descriptions read from an ONNX file: what the cost models consume.

Cost models never see torch or ONNX objects; they get :class:`LayerCost` records
(op, data type, multiply-accumulates, bytes moved) and a graph-level activation peak.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto, shape_inference

ELEMENT_BYTES = {TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2,
                 TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.INT4: 0.5,
                 TensorProto.UINT4: 0.5, TensorProto.INT32: 4, TensorProto.INT64: 8,
                 TensorProto.DOUBLE: 8, TensorProto.BOOL: 1}
INT8_OPS = {"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv"}
COMPUTE_OPS = {"MatMul", "Gemm", "Conv", "MatMulInteger", "ConvInteger", "Gather"}
PASS_THROUGH = {"DequantizeLinear", "Cast", "Transpose", "Reshape"}   # weight-side plumbing
NOT_FOLDED = {"DequantizeLinear", "QuantizeLinear"}   # ORT keeps these for its QDQ fusions
# (a DequantizeLinear of a weight that feeds a float kernel is folded to float at load)
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "Clip", "Sigmoid", "Tanh", "Erf", "Sqrt",
               "Pow", "LeakyRelu", "HardSigmoid", "HardSwish", "Neg", "Abs", "Exp", "Where"}
NO_COPY = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}   # views in ORT
SHAPE_OPS = {"Shape", "Range", "ConstantOfShape", "Size"}
KERNEL_CLASSES = ("elementwise", "quant", "reduce", "movement", "shape")


@dataclass(frozen=True)
class LayerCost:
    name: str
    op: str
    dtype: str           # the arithmetic's data type: fp32 | int8
    macs: int
    weight_bytes: float  # bytes of stored weights read
    act_bytes: float     # bytes of activations read and written
    grouped: bool = False   # grouped / depthwise convolution (far from peak on every CPU)


@dataclass(frozen=True)
class Kernel:
    """A non-MAC operator the runtime launches per inference (not fused into a producer)."""

    op: str
    kind: str            # one of KERNEL_CLASSES
    bytes: float         # bytes read and written


@dataclass(frozen=True)
class GraphCost:
    layers: tuple[LayerCost, ...]
    weight_bytes: float
    peak_activation_bytes: float
    kernels: tuple[Kernel, ...] = ()   # other operators that run per inference, after fusion
    fused: int = 0                     # elementwise operators fused into their producer
    n_nodes: int = 0                   # operators left after constant folding
    stored_bytes: float = 0.0          # initializers as stored in the file (packed, int8, ...)
    folded_bytes: float = 0.0          # every tensor constant folding materialises at load

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)


def describe(model: onnx.ModelProto | str, input_shapes: Mapping[str, tuple]) -> GraphCost:
    """Per-layer costs of ``model`` for inputs of the given concrete shapes (batch 1 for latency)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    model = _with_input_shapes(model, input_shapes)
    model = shape_inference.infer_shapes(model, data_prop=True)
    graph = model.graph
    info = _tensor_info(model)
    inits = {i.name: i for i in graph.initializer}
    constant, folded = _folded_constants(model)
    inits.update(folded)   # what ORT's constant folding materialises counts as a stored weight
    producer = {o: n for n in graph.node for o in n.output}
    layers = [_layer(n, info, inits, producer) for n in graph.node
              if n.op_type in COMPUTE_OPS and n.output[0] not in constant]
    readers = {i for n in graph.node if n.output[0] not in constant for i in n.input}
    readers |= {o.name for o in graph.output}
    weight_bytes = sum(_init_bytes(t) for name, t in inits.items() if name in readers)
    running = [n for n in graph.node if n.output[0] not in constant]
    kernels, fused = _kernels(running, info, inits)
    stored = sum(_init_bytes(t) for t in graph.initializer)
    return GraphCost(tuple(layers), weight_bytes, _peak_activations(graph, info, constant),
                     kernels, fused, len(running), stored,
                     sum(_init_bytes(t) for t in folded.values()))


def _kernels(nodes, info, inits) -> tuple[tuple[Kernel, ...], int]:
    """Non-MAC operators as the runtime runs them: an elementwise op whose activation input
    is the only use of another kernel's output is fused into it (conv+relu, matmul+bias,
    the GELU chain), as ONNX Runtime's graph optimizer does; reshapes are views (no kernel)."""
    producer = {o: n for n in nodes for o in n.output}
    uses: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    fused_names: set[str] = set()
    kernels, fused = [], 0
    for node in nodes:
        if node.op_type in COMPUTE_OPS or node.op_type in NO_COPY or node.op_type == "If":
            continue
        if node.op_type in ELEMENTWISE:
            source = [producer[i] for i in node.input if i in producer]
            if len(source) >= 1 and uses.get(source[0].output[0], 0) == 1 and (
                    source[0].op_type in COMPUTE_OPS or source[0].output[0] in fused_names
                    or source[0].op_type in ELEMENTWISE):
                fused_names.add(node.output[0])
                fused += 1
                continue
        moved = sum(_tensor_bytes(i, info) if i not in inits else _init_bytes(inits[i])
                    for i in node.input if i) + sum(_tensor_bytes(o, info) for o in node.output)
        kernels.append(Kernel(node.op_type, _kind(node.op_type, moved), moved))
    return tuple(kernels), fused


def _kind(op: str, moved: float) -> str:
    if op in SHAPE_OPS or moved <= 256:   # shape arithmetic on a handful of int64 values
        return "shape"
    if op in ELEMENTWISE:
        return "elementwise"
    if "Quantize" in op:
        return "quant"
    if op.startswith("Reduce") or op in ("Softmax", "LayerNormalization", "GlobalAveragePool",
                                         "AveragePool", "MaxPool", "CumSum", "ArgMax"):
        return "reduce"
    return "movement"


def _folded_constants(model: onnx.ModelProto) -> tuple[set[str], dict[str, TensorProto]]:
    """Tensors ONNX Runtime computes once at load (every input constant): packed weights
    unpacked in-graph, fp16 weights cast up. Returned as data-less TensorProtos carrying
    the runtime shape and type, so a packed 2-bit weight is read as the float it becomes.
    Also returns every constant name (initializers, and folded tensors of unknown shape)."""
    graph = model.graph
    types = {v.name: v.type.tensor_type for v in graph.value_info}
    constant = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    qdq_inputs = {i for n in graph.node if _qdq_int8(n, producer) for i in n.input[:2]}
    out = {}
    for node in graph.node:
        if not all(i in constant for i in node.input if i):
            continue
        if node.op_type in NOT_FOLDED and (node.op_type == "QuantizeLinear"
                                           or node.output[0] in qdq_inputs):
            continue   # a weight DequantizeLinear is folded unless it feeds an int8 QDQ kernel
        for name in node.output:
            constant.add(name)
            shape = types[name].shape.dim if name in types else None
            if not shape or not all(d.HasField("dim_value") for d in shape):
                continue   # unknown or scalar: shape plumbing, not a weight
            tensor = TensorProto(name=name, data_type=types[name].elem_type)
            tensor.dims.extend(d.dim_value for d in shape)
            out[name] = tensor
    return constant, out


def _with_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, tuple]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[value.name]):
                dim.ClearField("dim_param")
                dim.dim_value = int(size)
    return model


def _tensor_info(model: onnx.ModelProto) -> dict[str, tuple[tuple[int, ...], float]]:
    """name -> (shape, bytes per element) for every tensor with a known static shape."""
    out = {}
    values = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    for value in values:
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim)
        out[value.name] = (dims, ELEMENT_BYTES.get(tensor.elem_type, 4))
    for init in model.graph.initializer:
        out[init.name] = (tuple(init.dims), ELEMENT_BYTES.get(init.data_type, 4))
    return out


def _init_bytes(init) -> float:
    return float(np.prod(init.dims)) * ELEMENT_BYTES.get(init.data_type, 4) if init.dims else 4.0


def _tensor_bytes(name: str, info) -> float:
    shape, size = info.get(name, ((), 4))
    return float(np.prod(shape)) * size if shape else 0.0


def _weight_source(name: str, inits, producer) -> list:
    """Initializers feeding ``name`` through dequantize/cast/reshape plumbing."""
    if name in inits:
        return [inits[name]]
    node = producer.get(name)
    if node is None or node.op_type not in PASS_THROUGH:
        return []
    return [i for inp in node.input if inp for i in _weight_source(inp, inits, producer)]


def _layer(node, info, inits, producer) -> LayerCost:
    out_shape = info.get(node.output[0], ((), 4))[0]
    out_elems = int(np.prod(out_shape)) if out_shape else 0
    weights = [w for inp in node.input[:2] for w in _weight_source(inp, inits, producer)]
    if node.op_type == "Gather":
        table = weights[0] if weights and len(weights[0].dims) > 1 else None   # not Shape->Gather
        row_bytes = _init_bytes(table) / max(1, table.dims[0]) if table is not None else 0.0
        rows = out_elems / max(1, table.dims[1]) if table is not None and len(table.dims) > 1 else 0
        return LayerCost(node.name, node.op_type, "fp32", 0, rows * row_bytes,
                         _tensor_bytes(node.output[0], info))
    weight_bytes = sum(_init_bytes(w) for w in weights)
    act_bytes = sum(_tensor_bytes(i, info) for i in node.input[:2]
                    if i and not _weight_source(i, inits, producer))
    act_bytes += _tensor_bytes(node.output[0], info)
    in_shape = info.get(node.input[1], ((), 4))[0] if len(node.input) > 1 else ()
    if node.op_type.startswith("Conv"):
        reduce = int(np.prod(in_shape[1:])) if len(in_shape) > 1 else 0   # (C_in/groups) x kh x kw
    else:
        a_shape = info.get(node.input[0], ((), 4))[0]
        reduce = a_shape[-1] if a_shape else 0
    dtype = "int8" if node.op_type in INT8_OPS or _qdq_int8(node, producer) else "fp32"
    groups = next((a.i for a in node.attribute if a.name == "group"), 1)
    return LayerCost(node.name, node.op_type, dtype, out_elems * int(reduce), weight_bytes,
                     act_bytes, groups > 1)


def _qdq_int8(node, producer) -> bool:
    """MatMul/Conv fed by DequantizeLinear on both inputs: ORT fuses it into an int8 kernel."""
    return node.op_type in ("MatMul", "Conv") and len(node.input) > 1 and all(
        getattr(producer.get(i), "op_type", None) == "DequantizeLinear" for i in node.input[:2])


def _peak_activations(graph, info, constants: set[str]) -> float:
    """Largest sum of live activation tensors over the node order (freed after last use)."""
    last_use = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            last_use[name] = index
    outputs = {o.name for o in graph.output}
    live = {i.name: _tensor_bytes(i.name, info) for i in graph.input if i.name not in constants}
    peak = sum(live.values())
    for index, node in enumerate(graph.node):
        for name in node.output:
            if name not in constants:
                live[name] = _tensor_bytes(name, info)
        peak = max(peak, sum(live.values()))
        for name in list(live):
            if last_use.get(name, -1) <= index and name not in outputs:
                del live[name]
    return peak
