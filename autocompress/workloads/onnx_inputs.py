"""The inputs an ONNX-file workload runs on: the user's data, or synthetic inputs that
respect the model's declared shapes.

``--data`` is an ``.npz`` of arrays keyed by input name, or a folder of them. In a file,
an array of the input's declared rank is one value shared by every input set of that
file; an array of one more dimension holds one input set per row (all such arrays of a
file have the same number of rows). Nothing is unpickled (``allow_pickle=False``).

Without data, free dimensions come from ``--input-shape name=1x3x48x320`` or from another
input that names the same dimension; a free leading (batch) dimension is 1; any other is
refused, as are integer inputs whose range the graph does not tell (token ids are: they
index an embedding table). Guessing a sample rate or an image size would make every
quality and latency figure meaningless.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

MAX_CALIBRATION = 32
MAX_EVALUATION = 128
MASK_WORDS = ("mask",)
"""Integer inputs whose name says they are masks get ones (attention masks)."""
PASS_THROUGH = ("Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity")


class InputError(ValueError):
    """Inputs that do not fit the model; the message is one line naming the input."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: type
    dims: tuple        # int, or str (a named free dimension), or None (an unnamed one)


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's real inputs (initializers listed as inputs by old exporters excluded)."""
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise InputError(f"input {value.name!r} is not a tensor (sequences and maps are not supported)")
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else
                     _dimension_name(d.dim_param) for d in tensor.shape.dim)
        specs.append(InputSpec(value.name, helper.tensor_dtype_to_np_dtype(tensor.elem_type).type, dims))
    return specs


def _dimension_name(text: str) -> str | None:
    """A symbolic dimension's name, or None where the exporter wrote a placeholder for
    "unknown" rather than a name ("?": Paddle2ONNX, on every free axis of an OCR model's
    image): two axes that share a placeholder are not the same dimension."""
    return text if re.search(r"[A-Za-z]", text) else None


def parse_shapes(texts: Sequence[str], specs: Sequence[InputSpec]) -> dict[str, tuple[int, ...]]:
    """``["input=1x576", "state=2x1x128"]`` -> {name: shape}; one line for a bad one."""
    known = {s.name: s for s in specs}
    shapes = {}
    for text in texts:
        name, sep, dims = text.rpartition("=")
        if not sep or not re.fullmatch(r"\d+(x\d+)*|", dims):
            raise InputError(f"--input-shape {text!r}: expected NAME=1x3x224x224")
        if name not in known:
            raise InputError(f"--input-shape {text!r}: the model has no input {name!r} "
                             f"(inputs: {', '.join(known)})")
        shape = tuple(int(d) for d in dims.split("x")) if dims else ()
        _check_shape(known[name], shape, "--input-shape")
        shapes[name] = shape
    return shapes


def _check_shape(spec: InputSpec, shape: tuple, where: str) -> None:
    if len(shape) != len(spec.dims):
        raise InputError(f"{where}: input {spec.name!r} has {len(spec.dims)} dimensions "
                         f"{_show(spec.dims)}, got {len(shape)} {list(shape)}")
    for axis, (want, got) in enumerate(zip(spec.dims, shape)):
        if isinstance(want, int) and want != got:
            raise InputError(f"{where}: input {spec.name!r} axis {axis} must be {want}, got {got}")


def _show(dims: tuple) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def resolve_shapes(specs: Sequence[InputSpec], given: Mapping[str, tuple]) -> dict[str, tuple]:
    """Every input's concrete shape (see the module docstring for the rules)."""
    bound: dict[str, int] = {}
    where: dict[str, str] = {}
    for spec in specs:
        for axis, (want, got) in enumerate(zip(spec.dims, given.get(spec.name, ()))):
            if isinstance(want, str):
                where.setdefault(want, f"{spec.name!r} axis {axis}")
                if bound.setdefault(want, got) != got:
                    raise InputError(f"--input-shape: dimension {want!r} is {bound[want]} at "
                                     f"{where[want]} and {got} at {spec.name!r} axis {axis}")
    for spec in specs:
        if spec.dims and isinstance(spec.dims[0], str) and spec.name not in given:
            bound.setdefault(spec.dims[0], 1)
    shapes = {}
    for spec in specs:
        if spec.name in given:
            shapes[spec.name] = tuple(given[spec.name])
            continue
        shape = []
        for axis, dim in enumerate(spec.dims):
            if isinstance(dim, int):
                shape.append(dim)
            elif isinstance(dim, str) and dim in bound:
                shape.append(bound[dim])
            elif axis == 0:
                shape.append(1)
            else:
                raise InputError(
                    f"input {spec.name!r} {_show(spec.dims)} has a free dimension at axis {axis}"
                    f"{f' ({dim!r})' if dim else ''}: give --input-shape {spec.name}="
                    f"{'x'.join(_example_dims(spec.dims))} "
                    "or real inputs with --data")
        shapes[spec.name] = tuple(shape)
    return shapes


def _example_dims(dims: tuple) -> list[str]:
    return [str(d) if isinstance(d, int) else "1" if axis == 0 else "N" for axis, d in enumerate(dims)]


def index_ranges(model: onnx.ModelProto) -> dict[str, int]:
    """Integer inputs used as indices into a constant table: name -> number of rows."""
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    out = {}
    for node in model.graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[0] not in inits:
            continue
        name = node.input[1]
        while name in producers and producers[name].op_type in PASS_THROUGH:
            name = producers[name].input[0]
        rows = inits[node.input[0]][0] if inits[node.input[0]] else 0
        if rows > 0:
            out[name] = min(out.get(name, rows), rows)
    return out


def synthetic_feeds(model: onnx.ModelProto, specs: Sequence[InputSpec], shapes: Mapping[str, tuple],
                    n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` seeded input sets: floats ~ N(0, 1), token ids uniform over their table, masks
    and booleans ones; any other integer input is refused (its meaning is unknown)."""
    ranges = index_ranges(model)
    for spec in specs:
        integer = np.issubdtype(spec.dtype, np.integer)
        if integer and spec.name not in ranges and not _is_mask(spec.name):
            raise InputError(f"integer input {spec.name!r} is not an index into a table, so its "
                             "values cannot be guessed (a sample rate? a length?): give real "
                             "inputs with --data FILE.npz")
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        feed = {}
        for spec in specs:
            shape = shapes[spec.name]
            if np.issubdtype(spec.dtype, np.floating):
                feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            elif spec.dtype == np.bool_ or _is_mask(spec.name):
                feed[spec.name] = np.ones(shape, spec.dtype)
            else:
                feed[spec.name] = rng.integers(0, ranges[spec.name], shape).astype(spec.dtype)
        feeds.append(feed)
    return feeds


def _is_mask(name: str) -> bool:
    return any(word in name.lower() for word in MASK_WORDS)


def load_data(path: str | Path, specs: Sequence[InputSpec]) -> list[dict[str, np.ndarray]]:
    """Every input set in ``path`` (an .npz or a folder of them), checked against the model."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise InputError(f"--data {path}: the folder holds no .npz file")
    elif path.is_file():
        files = [path]
    else:
        raise InputError(f"--data {path}: no such file or folder")
    feeds = []
    for file in files:
        feeds += _file_feeds(file, specs)
    return feeds


def _file_feeds(file: Path, specs: Sequence[InputSpec]) -> list[dict[str, np.ndarray]]:
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as err:   # not a zip, object arrays (pickles), truncated
        raise InputError(f"--data {file}: not a readable .npz of arrays "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    names = {s.name for s in specs}
    missing, extra = sorted(names - set(arrays)), sorted(set(arrays) - names)
    if missing or extra:
        raise InputError(f"--data {file}: " + "; ".join(
            ([f"lacks input(s) {', '.join(missing)}"] if missing else []) +
            ([f"has array(s) {', '.join(extra)} the model has no input for"] if extra else [])) +
            f" (inputs: {', '.join(s.name for s in specs)})")
    rows = set()
    for spec in specs:
        array = arrays[spec.name]
        if array.dtype != np.dtype(spec.dtype):
            raise InputError(f"--data {file}: input {spec.name!r} is {array.dtype}, the model "
                             f"takes {np.dtype(spec.dtype)}")
        if array.ndim == len(spec.dims) + 1:
            rows.add(array.shape[0])
            _check_shape(spec, array.shape[1:], f"--data {file}")
        else:
            _check_shape(spec, array.shape, f"--data {file}")
    if len(rows) > 1:
        raise InputError(f"--data {file}: stacked arrays disagree on the number of input "
                         f"sets ({sorted(rows)})")
    n = rows.pop() if rows else 1
    return [{s.name: arrays[s.name][k] if arrays[s.name].ndim == len(s.dims) + 1
             else arrays[s.name] for s in specs} for k in range(n)]


def split(feeds: Sequence[dict], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Disjoint (calibration, evaluation) sets: a seeded shuffle, halves, capped at
    :data:`MAX_CALIBRATION` / :data:`MAX_EVALUATION` input sets."""
    if len(feeds) < 2:
        raise InputError(f"--data holds {len(feeds)} input set; at least 2 are needed (one "
                         "to calibrate, one to evaluate)")
    order = np.random.default_rng(seed).permutation(len(feeds))
    half = len(feeds) // 2
    calibration = [feeds[i] for i in order[:half][:MAX_CALIBRATION]]
    evaluation = [feeds[i] for i in order[half:][:MAX_EVALUATION]]
    return calibration, evaluation
