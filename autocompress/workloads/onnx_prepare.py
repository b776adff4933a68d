"""A user's ONNX file made ready for compression, as exporters write them.

1. ONNX Runtime's own pre-processing (``quant_pre_process``: symbolic shape inference,
   its graph optimizer, ONNX shape inference). Models with ``If`` subgraphs defeat the
   symbolic pass; then the rest runs without it. Main-graph ``Constant`` weights become
   initializers here.
2. Weights that stay in subgraphs (initializers or ``Constant`` nodes of ``If`` branches,
   ``Loop`` bodies) move to the main graph's initializers. A subgraph may read any
   value of its enclosing graph, so the model computes the same thing, and every weight
   technique (which rewrites main-graph initializers) then reaches them.
3. Opset :data:`~autocompress.compression.weights.quantize.OPSET` (INT4 DequantizeLinear).

The result must compute what the original does (checked on the example inputs by the
caller); it is cached by the original's bytes, so every process (workers, ``export``)
works on the same file.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..compression.weights.onnx_graph import subgraphs
from ..compression.weights.quantize import to_opset
from ..paths import cache_dir

VERSION = 1
MIN_HOISTED = 16
"""Float constants of at least this many values move out of subgraphs (smaller ones are
shape arithmetic and epsilons, no storage to save)."""
FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)


def prepared_path(path: Path) -> tuple[Path, list[str]]:
    """The prepared copy of ``path`` (made once, cached) and what was done, in words."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:20]
    folder = cache_dir() / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{digest}-v{VERSION}.onnx"
    notes_file = out.with_suffix(".notes")
    if out.is_file() and notes_file.is_file():
        return out, notes_file.read_text(encoding="utf-8").splitlines()
    model, notes = prepare(path)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    notes_file.write_text("\n".join(notes), encoding="utf-8")
    return out, notes


def prepare(path: Path) -> tuple[onnx.ModelProto, list[str]]:
    model, notes = _ort_preprocess(path)
    moved = hoist_subgraph_weights(model)
    if moved:
        notes.append(f"{moved} weight(s) moved out of subgraphs (If branches) into initializers")
    merged = merge_duplicates(model)
    if merged:
        notes.append(f"{merged} duplicate initializer(s) merged (constant folding had copied them)")
    model = to_opset(model)
    return model, notes


def merge_duplicates(model: onnx.ModelProto) -> int:
    """Main-graph initializers with the same type, shape and bytes become one; returns how
    many copies went. ONNX Runtime's optimizer folds ``Unsqueeze(W)`` once per reader, so a
    weight two LSTM ops share comes out stored twice."""
    first: dict[tuple, str] = {}
    renames: dict[str, str] = {}
    keep = []
    outputs = {o.name for o in model.graph.output}
    for init in model.graph.initializer:
        key = (init.data_type, tuple(init.dims),
               hashlib.sha256(numpy_helper.to_array(init).tobytes()).hexdigest())
        if key in first and init.name not in outputs and int(np.prod(init.dims)) >= MIN_HOISTED:
            renames[init.name] = first[key]
        else:
            first.setdefault(key, init.name)
            keep.append(init)
    if renames:
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
        _rename_reads(model.graph, renames)
    return len(renames)


def _ort_preprocess(path: Path) -> tuple[onnx.ModelProto, list[str]]:
    import onnxruntime
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnxruntime.set_default_logger_severity(3)   # its optimizer's notes are not the user's
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "pre.onnx")
        for symbolic in (True, False):
            previous = logging.root.manager.disable
            logging.disable(logging.CRITICAL)     # the symbolic pass logs its own failures
            try:
                quant_pre_process(str(path), out, skip_symbolic_shape=not symbolic)
                note = ("ONNX Runtime pre-processing (symbolic shape inference, optimizer, "
                        "shape inference)" if symbolic else
                        "ONNX Runtime pre-processing without symbolic shape inference "
                        f"(it failed: {errors[0]})")
                return onnx.load(out), [note]
            except Exception as err:   # noqa: BLE001 - ORT's tools raise anything
                errors.append(f"{type(err).__name__}{': ' + str(err).splitlines()[0] if str(err) else ''}")
            finally:
                logging.disable(previous)
    return onnx.load(str(path)), [f"ONNX Runtime pre-processing failed ({errors[-1]}); the "
                                  "model is used as given"]


def hoist_subgraph_weights(model: onnx.ModelProto) -> int:
    """Move float initializers and ``Constant`` tensors of subgraphs to the main graph
    (renamed where the name is defined more than once in the model); returns how many moved."""
    graph = model.graph
    counts: dict[str, int] = {}
    _count_definitions(graph, counts)
    hoisted: set[str] = set()
    moved = 0
    for node in graph.node:
        for sub in subgraphs(node):
            moved += _hoist(sub, graph, counts, hoisted)
    return moved


def _hoist(sub: onnx.GraphProto, main: onnx.GraphProto, counts: dict, hoisted: set) -> int:
    moved = 0
    for node in sub.node:       # nested subgraphs first
        for inner in subgraphs(node):
            moved += _hoist(inner, main, counts, hoisted)
    formal = {v.name for v in sub.input}
    renames: dict[str, str] = {}
    tensors = []
    keep = []
    for init in sub.initializer:
        if init.name in formal or not _is_weight(init):
            keep.append(init)
        else:
            tensors.append((init.name, init))
    del sub.initializer[:]
    sub.initializer.extend(keep)
    nodes = []
    for node in sub.node:
        tensor = _constant_tensor(node)
        if tensor is not None and _is_weight(tensor):
            tensors.append((node.output[0], tensor))
        else:
            nodes.append(node)
    del sub.node[:]
    sub.node.extend(nodes)
    for name, tensor in tensors:
        renames[name] = _unique(name, counts, hoisted)
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = renames[name]
        main.initializer.append(copy)
    _rename_reads(sub, {old: new for old, new in renames.items() if old != new})
    return moved + len(tensors)


def _constant_tensor(node: onnx.NodeProto):
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            return attr.t
    return None


def _is_weight(tensor: onnx.TensorProto) -> bool:
    return tensor.data_type in FLOATS and int(np.prod(tensor.dims)) >= MIN_HOISTED and \
        not tensor.external_data


def _unique(name: str, counts: dict, hoisted: set) -> str:
    """``name`` when nothing else in the model defines it, else ``name__hoisted<k>``."""
    new, k = name, 0
    while (new == name and counts.get(name, 0) > 1) or new in hoisted or (new != name and new in counts):
        k += 1
        new = f"{name}__hoisted{k}"
    hoisted.add(new)
    return new


def _count_definitions(graph: onnx.GraphProto, counts: dict) -> None:
    """How often each value name is defined anywhere (inputs, initializers, node outputs)."""
    for name in [v.name for v in graph.input] + [i.name for i in graph.initializer]:
        counts[name] = counts.get(name, 0) + 1
    for node in graph.node:
        for name in node.output:
            counts[name] = counts.get(name, 0) + 1
        for sub in subgraphs(node):
            _count_definitions(sub, counts)


def _rename_reads(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    if not renames:
        return
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renames:
                node.input[k] = renames[name]
        for sub in subgraphs(node):
            _rename_reads(sub, renames)
    for output in graph.output:      # a branch may return a weight directly
        if output.name in renames:
            graph.node.append(onnx.helper.make_node("Identity", [renames[output.name]], [output.name]))


def same_outputs(original, prepared: Path, feeds, rtol: float = 1e-3, atol: float = 1e-4) -> str | None:
    """None when the original's session and the prepared file give the same outputs on
    ``feeds``; else what differs, in words."""
    from ..backends.ort_runner import make_session, run_batches

    a = run_batches(original, feeds)
    b = run_batches(make_session(prepared), feeds)
    for feed_a, feed_b in zip(a, b):
        for k, (x, y) in enumerate(zip(feed_a, feed_b)):
            if x.shape != y.shape or not np.allclose(x, y, rtol=rtol, atol=atol):
                worst = float(np.max(np.abs(x.astype(np.float64) - y))) if x.shape == y.shape else None
                return f"output {k} differs (max |diff| {worst})"
    return None
