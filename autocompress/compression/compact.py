"""The graph's own bytes, trimmed: in a small model they are a third of the file.

The exporter names every intermediate tensor and node after its module path
(``/blocks/blocks.5/conv/conv.2/Clip_output_0``), stores each name once per use, writes
one ``Constant`` node per ``Clip`` bound and annotates intermediate shapes that any
runtime infers again. Uniform 4-bit digits-cnn: 65,563 bytes untrimmed, 55,991 trimmed
(``benchmarks/artifact_bytes.py``). So, in the main graph:

- intermediate values become ``t<i>`` and plain nodes ``n<i>``, numbered in graph order
  (the same graph always gets the same bytes);
- identical ``Constant`` nodes become one;
- shape annotations of intermediate values are dropped.

Kept: the names a user or a runtime looks things up by: graph inputs and outputs,
initializers (each weight is named after its layer), every node holding a subgraph (the
early-exit runtime finds its ``If`` by name), and every value a subgraph reads or writes.
"""
from __future__ import annotations

import onnx

from .weights.onnx_graph import subgraphs


def compact_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """Trim ``model``'s main graph in place (see the module doc); returns ``model``."""
    graph = model.graph
    kept = {v.name for v in (*graph.input, *graph.output)} | {i.name for i in graph.initializer}
    for node in graph.node:
        for sub in subgraphs(node):
            kept |= _named_inside(sub)
    _merge_constants(graph, kept)
    taken = kept | {node.name for node in graph.node if subgraphs(node)}
    renamed: dict[str, str] = {}
    counters = {"n": 0, "t": 0}

    def fresh(prefix: str) -> str:
        while f"{prefix}{counters[prefix]}" in taken:
            counters[prefix] += 1
        name = f"{prefix}{counters[prefix]}"
        taken.add(name)
        return name

    for node in graph.node:
        if not subgraphs(node):
            node.name = fresh("n")
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
        for i, name in enumerate(node.output):
            if name and name not in kept:
                renamed[name] = fresh("t")
                node.output[i] = renamed[name]
    annotated = [v for v in graph.value_info if v.name in kept]
    del graph.value_info[:]
    graph.value_info.extend(annotated)
    return model


def _merge_constants(graph: onnx.GraphProto, kept: set[str]) -> None:
    """Readers of a ``Constant`` equal to an earlier one read the earlier one."""
    first: dict[bytes, str] = {}
    alias: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
        if node.op_type == "Constant" and node.output[0] not in kept:
            key = b"".join(a.SerializeToString(deterministic=True) for a in node.attribute)
            if key in first:
                alias[node.output[0]] = first[key]
                continue
            first[key] = node.output[0]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _named_inside(graph: onnx.GraphProto) -> set[str]:
    """Every name a subgraph's nodes read or write, nested subgraphs included (a subgraph
    may read any value of the graphs around it by name)."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for sub in subgraphs(node):
            names |= _named_inside(sub)
    return names
