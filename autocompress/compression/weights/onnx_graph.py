"""Where an ONNX model's weights are used, subgraphs included.

Exporters put weights in places the main graph's node list does not show: inside the
branches of ``If`` nodes (silero-vad keeps its 8 kHz and 16 kHz networks there), and as
inputs of recurrent ops. :func:`weights` finds every float initializer that a
weight-bearing op reads as its weight, and says what kind of weight it is, which decides
how it may be stored (:mod:`.weight_storage`).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Iterator

import onnx
from onnx import TensorProto

WEIGHT_INPUTS = {"MatMul": (1,), "Conv": (1,), "Gather": (0,), "Gemm": (1,),
                 "ConvTranspose": (1,), "LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2)}
"""Op -> input positions that hold a weight (the rest are activations, biases or states)."""
RECURRENT = ("LSTM", "GRU", "RNN")
WEIGHT_ONLY = ("recurrent", "matmul:inner", "conv:inner", "other")
"""Kinds stored weight-only (rebuilt to float in the main graph): ONNX Runtime's int8
quantizers rewrite main-graph MatMul / Conv nodes only."""


@dataclass(frozen=True)
class Use:
    node: onnx.NodeProto
    index: int          # which input of ``node``
    inner: bool         # inside a subgraph (an If branch, a Loop body)


def walk(graph: onnx.GraphProto, inner: bool = False) -> Iterator[tuple[onnx.NodeProto, bool]]:
    """Every node of ``graph`` and its subgraphs, with whether it lies in a subgraph."""
    for node in graph.node:
        yield node, inner
        for graph_ in subgraphs(node):
            yield from walk(graph_, True)


def producing_nodes(graph: onnx.GraphProto, output: str) -> list[onnx.NodeProto]:
    """The main-graph nodes ``output`` is computed by, in graph order (none: an initializer or
    a graph input)."""
    nodes = list(graph.node)
    producer = {o: i for i, node in enumerate(nodes) for o in node.output}
    needed, stack = set(), [output]
    while stack:
        index = producer.get(stack.pop())
        if index is not None and index not in needed:
            needed.add(index)
            stack.extend(nodes[index].input)
    return [nodes[i] for i in sorted(needed)]


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    out = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            out.append(attr.g)
        out.extend(attr.graphs)
    return out


def uses(graph: onnx.GraphProto) -> dict[str, list[Use]]:
    """Value name -> every place it is read, subgraphs included. Reads through an
    ``Identity`` (torch's exporter aliases a weight that two shared blocks read) count as
    reads of the value itself, marked ``inner``: ORT's int8 quantizers do not follow them."""
    direct: dict[str, list[Use]] = {}
    for node, inner in walk(graph):
        for index, name in enumerate(node.input):
            if name:
                direct.setdefault(name, []).append(Use(node, index, inner))

    def resolve(name: str, seen: frozenset) -> list[Use]:
        out = []
        for use in direct.get(name, []):
            if use.node.op_type == "Identity" and use.node.output[0] not in seen:
                out += [Use(u.node, u.index, True) for u in
                        resolve(use.node.output[0], seen | {use.node.output[0]})]
            else:
                out.append(use)
        return out

    return {name: resolve(name, frozenset()) for name in direct}


def kind_of(name: str, found: list[Use]) -> str | None:
    """``matmul`` / ``conv`` / ``gather`` (main-graph kernels the int8 quantizers can take),
    ``recurrent``, ``matmul:inner`` / ``conv:inner`` (in a subgraph), ``other`` (a Gemm
    or ConvTranspose weight); None when some use is not a weight input (left alone)."""
    if not found or any(u.index not in WEIGHT_INPUTS.get(u.node.op_type, ()) for u in found):
        return None
    ops = {u.node.op_type for u in found}
    inner = any(u.inner for u in found)
    if ops <= set(RECURRENT):
        return "recurrent"
    if len(ops) > 1:
        return None
    op = ops.pop()
    if op in ("MatMul", "Conv"):
        return f"{op.lower()}:inner" if inner else op.lower()
    if op == "Gather":
        return None if inner else "gather"
    return "other"


def base_kind(kind: str) -> str:
    """The weight layout a kind has: ``matmul`` [K, N], ``conv`` [O, ...], ``gather``
    [rows, dim], ``recurrent`` [directions, gates x hidden, inputs]."""
    return "conv" if kind == "other" else kind.split(":")[0]


def weights(model: onnx.ModelProto) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Float initializers of 2+ dimensions read as weights: name -> (kind, shape), in
    the order the graph first uses them."""
    inits = {i.name: i for i in model.graph.initializer}
    found = uses(model.graph)
    out = {}
    for node, _ in walk(model.graph):
        for index in WEIGHT_INPUTS.get(node.op_type, ()):
            if index >= len(node.input) or node.input[index] not in inits or node.input[index] in out:
                continue
            init = inits[node.input[index]]
            if init.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16) or len(init.dims) < 2:
                continue
            kind = kind_of(init.name, found[init.name])
            if kind is not None and prod(init.dims) > 0:
                out[init.name] = (kind, tuple(init.dims))
    return out
