"""Make a candidate's ONNX file importable by TVM 0.27's Relax ONNX frontend.

The artifact stays as the search measured it; TVM gets a prepared copy:

1. weight subgraphs evaluated once (ONNX Runtime): blocked INT4 DequantizeLinear, packed
   2/3-bit codes, palettes and sparse masks become the float / int8 tensors the kernels read
   (the frontend has no INT4 tensors and no low-bit kernels);
2. static input shapes from the workload's example and every shape subgraph folded by
   onnxslim (PyPI): ``Shape -> Gather -> Concat -> Reshape`` chains that the frontend turns
   into ``R.Shape`` values it then cannot feed to ``shape_of`` (MiniLM, issue 14);
3. two rewrites for gaps in the frontend, each exact:
   ``ConvInteger`` (no converter) becomes the int32 ``Conv`` it is defined as, and inside
   ``If`` branches ``LayerNormalization`` names its optional outputs (the branch converter
   otherwise binds the whole (y, mean, inv_std) tuple to ``y``).

An op the frontend still cannot convert is named in one line by :func:`unsupported_ops`.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

TUPLE_OPS_IN_BRANCHES = {"LayerNormalization": 3}
"""ops whose TVM converter returns a tuple: inside an ``If`` branch they need every output
named (``relax/frontend/onnx/onnx_frontend.py``, ``_convert_subgraph``)."""


def prepare(model, input_shapes: Mapping[str, tuple]):
    """The ONNX ModelProto as TVM can import it, for these static input shapes."""
    model = fold_weight_subgraphs(model)
    model = fold_shapes(model, input_shapes)
    _conv_integer_as_int32_conv(model.graph)
    _name_tuple_outputs_in_branches(model.graph)
    return model


def fold_shapes(model, input_shapes: Mapping[str, tuple]):
    """Static input shapes, then onnxslim's constant folding and shape inference."""
    import onnxslim

    graph_inputs = {i.name for i in model.graph.input}
    shapes = [f"{name}:{','.join(str(int(d)) for d in shape)}"   # scalars: already static,
              for name, shape in input_shapes.items()            # and onnxslim cannot parse ""
              if name in graph_inputs and len(shape) > 0]
    # Fusions (MatMul+Add -> Gemm, Gelu) are plain ONNX ops TVM converts; kept.
    return onnxslim.slim(model, input_shapes=shapes or None)


def fold_weight_subgraphs(model):
    """Evaluate (with ONNX Runtime) the nodes that depend only on initializers and store their
    results as initializers, in the main graph and inside ``If`` branches and loop bodies
    (an early exit's ``rest`` branch holds its own INT4 weights). The TVM library is therefore
    larger than the ONNX artifact; ``size_bytes`` stays the ONNX file's."""
    _fold_graph(model.graph, {}, model)
    return model


def _fold_graph(graph, outer: dict, model) -> None:
    """Fold ``graph``'s constant nodes; ``outer``: the enclosing graphs' initializers by name
    (a branch may read them). Then the same inside every subgraph of the remaining nodes."""
    from onnx import helper, numpy_helper

    constant = {i.name for i in graph.initializer} | set(outer)
    folded = []
    for node in graph.node:
        if node.op_type in ("If", "Loop", "Scan") or (not node.input and node.op_type != "Constant"):
            continue
        if all(name == "" or name in constant for name in node.input):
            folded.append(node)
            constant.update(node.output)
    if folded:
        folded_ids = {id(n) for n in folded}
        keep = [n for n in graph.node if id(n) not in folded_ids]
        used = _used_names(keep) | {o.name for o in graph.output}
        needed = sorted({out for node in folded for out in node.output} & used)
        local = {i.name for i in graph.initializer}
        read = {name for node in folded for name in node.input} - local
        sub = helper.make_graph(folded, "weights", [],
                                [helper.make_empty_tensor_value_info(n) for n in needed],
                                list(graph.initializer) + [outer[n] for n in sorted(read & set(outer))])
        values = dict(zip(needed, _evaluate(sub, model, needed)))
        initializers = [i for i in graph.initializer if i.name in used]
        initializers += [numpy_helper.from_array(values[n], n) for n in needed]
        del graph.node[:]
        graph.node.extend(keep)
        del graph.initializer[:]
        graph.initializer.extend(initializers)
    visible = {**outer, **{i.name: i for i in graph.initializer}}
    for node in graph.node:
        for attr in node.attribute:
            if attr.g.node:
                _fold_graph(attr.g, visible, model)


def _evaluate(graph, model, names: list) -> list:
    import onnxruntime as ort
    from onnx import helper

    sub_model = helper.make_model(graph, opset_imports=list(model.opset_import))
    sub_model.ir_version = model.ir_version
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(sub_model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(names, {})


def _used_names(nodes) -> set[str]:
    """Every value the nodes read, including outer-scope names read inside their branches."""
    names = set()
    for node in nodes:
        names.update(node.input)
        for attr in node.attribute:
            if attr.g.node:
                names |= _used_names(attr.g.node)
    return names


def _conv_integer_as_int32_conv(graph) -> None:
    """ConvInteger(x, w, x_zp, w_zp) = Conv(int32(x) - x_zp, int32(w) - w_zp), int32 out.

    Subtracting the zero points before the convolution pads with the zero point, as
    ConvInteger does. TVM lowers an int32 conv2d for every target."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.g.node:
                _conv_integer_as_int32_conv(attr.g)
        if node.op_type != "ConvInteger":
            nodes.append(node)
            continue
        base = node.output[0]
        centred = []
        for k, name in enumerate(list(node.input[:2])):
            zp = node.input[k + 2] if len(node.input) > k + 2 and node.input[k + 2] else ""
            if name in inits and (not zp or zp in inits):
                value = numpy_helper.to_array(inits[name]).astype(np.int32)
                if zp:
                    value = value - _zp_shape(numpy_helper.to_array(inits[zp]).astype(np.int32), k,
                                              value.ndim)
                graph.initializer.append(numpy_helper.from_array(value, f"{base}_int32_{k}"))
                centred.append(f"{base}_int32_{k}")
                continue
            nodes.append(helper.make_node("Cast", [name], [f"{base}_cast_{k}"], to=TensorProto.INT32))
            current = f"{base}_cast_{k}"
            if zp:
                nodes.append(helper.make_node("Cast", [zp], [f"{base}_zp_{k}"], to=TensorProto.INT32))
                nodes.append(helper.make_node("Sub", [current, f"{base}_zp_{k}"], [f"{base}_c_{k}"]))
                current = f"{base}_c_{k}"
            centred.append(current)
        conv = helper.make_node("Conv", centred, list(node.output), name=node.name)
        conv.attribute.extend(node.attribute)
        nodes.append(conv)
    del graph.node[:]
    graph.node.extend(nodes)


def _zp_shape(zp: np.ndarray, k: int, ndim: int) -> np.ndarray:
    """A per-output-channel weight zero point broadcast over the kernel's other axes."""
    if k == 1 and zp.ndim == 1 and zp.size > 1:
        return zp.reshape((-1,) + (1,) * (ndim - 1))
    return zp


def _name_tuple_outputs_in_branches(graph, inside: bool = False) -> None:
    for node in graph.node:
        wanted = TUPLE_OPS_IN_BRANCHES.get(node.op_type, 0) if inside else 0
        while len(node.output) < wanted:
            node.output.append(f"{node.output[0]}_unused_{len(node.output)}")
        for attr in node.attribute:
            if attr.g.node:
                _name_tuple_outputs_in_branches(attr.g, inside=True)


def unsupported_ops(model) -> list[str]:
    """The model's op types (in branches too) that TVM's ONNX frontend has no converter for."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = set(_get_convert_map()) | {"If"}   # If: converted by the graph walker itself
    found = set()

    def walk(graph):
        for node in graph.node:
            if node.op_type not in known:
                found.add(node.op_type)
            for attr in node.attribute:
                if attr.g.node:
                    walk(attr.g)

    walk(model.graph)
    return sorted(found)
