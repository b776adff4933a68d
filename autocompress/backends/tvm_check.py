"""Does a host TVM library compute what ONNX Runtime computes? Checked on evaluation batches.

Two criteria, both must hold (:attr:`Agreement.ok`):

1. **Exact** (hard limit :data:`EXACT_TOLERANCE`): TVM computes the graph's own arithmetic,
   which ONNX Runtime runs with graph optimizations disabled. A graph that requantizes
   computed activations (``QuantizeLinear`` / ``DynamicQuantizeLinear`` of a computed
   tensor: w8a8, w8a8c, static QDQ) is checked *teacher-forced*: a second TVM library of the
   graph cut at every such quantizer reads ORT's integer codes (and scales, zero points)
   there, so each float segment between two quantizers starts from the same integers and
   must land within the limit of ORT's values, and each of TVM's quantizers, given ORT's
   float input, must give ORT's codes exactly. End to end such graphs are chaotic, on any
   pair of runtimes: float kernels that sum in another order differ by a few ulps, a value
   a few ulps from a rounding boundary gets the neighbouring code (MiniLM w8a8c:
   x / scale = 42.500008 in ORT, 42.499996 in TVM), and later requantizations amplify the
   one-code step (measured end to end: 11.5% of the output range on MiniLM w8a8c, 36% on
   static QDQ, while every segment agrees within 2e-6 and no code differs; ORT itself moves
   1.5% on one MiniLM static-QDQ input when run on tvm_prepare's copy of the graph, shape
   subgraphs and constants folded). Those figures are reported (``exact``, ``diverging``),
   not limited. The cut library shares the deployed one's importer, kernels and compiler;
   an error of the deployed library's own fusion would show end to end on most inputs and
   in the quality.
2. **Quality** (limit :data:`QUALITY_TOLERANCE`, when the caller passes the workload's
   scorer and every evaluation batch): the library's quality equals the quality ORT's
   optimized session (the arithmetic the search measures) gets on the same inputs. ORT's
   optimized kernels are approximations of the graph (weight-only ints become MatMulNBits
   with int8 activations: up to 3.9% of the output range on MiniLM w4), so their elementwise
   distance (``optimized``) is reported, not limited: what a user sees of it is the quality.
   ``quality_graph`` is ORT's graph arithmetic's quality on the same inputs. The inputs are
   the library's (batch 1 where it was compiled so, padded to its static shape), so the
   study's record, measured on the evaluation batches as they are, can differ from both by
   what the shapes change (dynamic quantization ranges per batch; ``tvm_formats.py`` shows
   both).

Caveat: ORT's u8s8 int8 kernels on x86 without VNNI can saturate int16 pair sums with
full-range weights; w8a8c keeps 7-bit weights for that reason (``compression/weights/quantize.py``).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

EXACT_TOLERANCE = 1e-5
"""Largest difference, as a share of the ORT tensor's range, to ORT's graph arithmetic (per
segment for requantized graphs). Measured: float formats <= 1.5e-6 (MiniLM), integer
kernels 0."""
QUALITY_TOLERANCE = 0.005
"""Largest difference between the library's quality and ORT's optimized session's on the
same inputs, in the workload metric's own units (accuracy, mean cosine: [0, 1]): two images
of the tiny MLP's 397. Measured: MiniLM (256 sentences) w4 5.2e-4, static QDQ 1.0e-4, w8a8c
3e-5; tiny MLP w8 and sparse-w4 one image (0.0025)."""
REQUANTIZERS = ("QuantizeLinear", "DynamicQuantizeLinear")
PROBE = "__tvm_probe"


@dataclass(frozen=True)
class Agreement:
    """Worst differences over the inputs, as shares of ORT's tensor ranges, and qualities."""

    exact: float            # library vs ORT with graph optimizations disabled, end to end
    optimized: float        # library vs ORT's optimized session (what the search measures)
    inputs: int
    forced: float = -1.0    # teacher-forced segments (-1: none cut, ``exact`` is the check)
    requantized: int = 0    # quantizers cut for the teacher-forced check
    mismatched_codes: int = 0   # TVM quantizer codes != ORT's, given ORT's float input
    forced_inputs: int = 0
    diverging: int = 0      # inputs whose end-to-end output is beyond EXACT_TOLERANCE
    quality: float | None = None            # the library's, workload metric
    quality_ort: float | None = None        # ORT optimized, on the library's inputs
    quality_graph: float | None = None      # ORT's graph arithmetic, on the library's inputs
    metric: str = ""

    @property
    def graph(self) -> float:
        """The figure the exact criterion limits."""
        return self.forced if self.requantized else self.exact

    @property
    def exact_ok(self) -> bool:
        return self.graph <= EXACT_TOLERANCE and self.mismatched_codes == 0

    @property
    def quality_gap(self) -> float | None:
        if self.quality is None or self.quality_ort is None:
            return None
        return abs(self.quality - self.quality_ort)

    @property
    def ok(self) -> bool:
        gap = self.quality_gap
        return self.exact_ok and (gap is None or gap <= QUALITY_TOLERANCE)

    def describe(self) -> str:
        if self.requantized:
            where = (f"{self.forced_inputs} inputs with {self.requantized} requantized tensors "
                     f"taken from ONNX Runtime: within {self.forced:.1e} of its graph "
                     f"arithmetic's range (limit {EXACT_TOLERANCE:.0e}), "
                     f"{self.mismatched_codes} quantizer codes differ; end to end "
                     f"{self.exact:.1e} ({self.diverging} of {self.inputs} inputs beyond the "
                     f"limit)")
        else:
            where = (f"{self.inputs} inputs: within {self.exact:.1e} of ONNX Runtime's graph "
                     f"arithmetic's output range (limit {EXACT_TOLERANCE:.0e})")
        text = f"{where}, {self.optimized:.2%} from its optimized kernels"
        if self.quality_gap is not None:
            text += (f"; {self.metric} {self.quality:.4f} vs ORT {self.quality_ort:.4f} on the "
                     f"same inputs (limit {QUALITY_TOLERANCE}; graph arithmetic "
                     f"{self.quality_graph:.4f})")
        return text


def compare(library: Path | str, onnx_path: Path | str, batches: Sequence[Mapping],
            input_names: Sequence[str], shapes: Mapping[str, tuple],
            score: Callable | None = None, forced_inputs: int | None = None) -> Agreement:
    """Run the host library and both ORT arithmetics on every input of ``batches``.

    ``score`` (the workload's scorer; ``batches`` must then be its whole evaluation set)
    adds the quality criterion. ``forced_inputs`` caps the inputs of the teacher-forced
    check (untuned TVM is slow: MiniLM about 1.7 s an input on two cores)."""
    import onnx

    from . import ort_runner
    from .tvm_compile import load_local

    model = onnx.load(str(onnx_path))
    quantizers = requantizers(model)
    plain = _plain_session(model, _teacher_names(model, quantizers))
    optimized = ort_runner.make_session(onnx_path)
    vm = load_local(library)
    names = [o.name for o in model.graph.output]
    tally, cut = _Tally(), None
    outputs: dict[str, list] = {"tvm": [], "ort": [], "graph": []}
    for parts in _batch_parts(batches, input_names, shapes):
        rows: dict[str, list] = {key: [] for key in outputs}
        for feed in parts:
            teacher = dict(zip(plain.names, plain.session.run(plain.names, feed)))
            row = {"tvm": _run(vm, [feed[n] for n in input_names]),
                   "ort": optimized.run(None, feed), "graph": [teacher[n] for n in names]}
            tally.end_to_end(row)
            if quantizers and (forced_inputs is None or tally.forced_inputs < forced_inputs):
                cut = cut or _cut_library(model, quantizers, input_names, feed, teacher)
                _forced_check(cut, feed, teacher, tally)
            for key, value in row.items():
                rows[key].append(value)
        if score is not None:
            for key, value in rows.items():
                outputs[key].append(_join(value))
    return tally.agreement(len(quantizers), *_qualities(score, outputs))


def library_outputs(library: Path | str, inputs: Sequence[Mapping],
                    input_names: Sequence[str]) -> list[list[np.ndarray]]:
    """A host library's outputs on each input."""
    from .tvm_compile import load_local

    vm = load_local(library)
    return [_run(vm, [feed[n] for n in input_names]) for feed in inputs]


@dataclass(frozen=True)
class BoardReference:
    """What the export's ``run_model_tvm.py`` compares a board's library with, where no
    scorer runs: the first evaluation inputs at the library's static shapes, ORT's graph
    arithmetic (optimizations off) on each, and how many quantizers requantize activations."""

    inputs: list[dict]
    outputs: list[list[np.ndarray]]
    requantized: int


def board_reference(onnx_path: Path | str, batches: Sequence[Mapping],
                    input_names: Sequence[str], shapes: Mapping[str, tuple]) -> BoardReference:
    import itertools

    import onnx

    from .board_check import BOARD_INPUTS

    model = onnx.load(str(onnx_path))
    inputs = list(itertools.islice(feeds(batches, input_names, shapes), BOARD_INPUTS))
    plain = _plain_session(model, [o.name for o in model.graph.output])
    return BoardReference(inputs, [plain.session.run(plain.names, feed) for feed in inputs],
                          len(requantizers(model)))


@dataclass
class _Tally:
    """Worst figures so far."""

    exact: float = 0.0
    optimized: float = 0.0
    inputs: int = 0
    diverging: int = 0
    forced: float = 0.0
    codes: int = 0
    forced_inputs: int = 0

    def end_to_end(self, row: Mapping[str, list]) -> None:
        exact = _difference(row["tvm"], row["graph"])
        self.exact = max(self.exact, exact)
        self.optimized = max(self.optimized, _difference(row["tvm"], row["ort"]))
        self.diverging += exact > EXACT_TOLERANCE
        self.inputs += 1

    def agreement(self, requantized: int, *qualities) -> Agreement:
        return Agreement(self.exact, self.optimized, self.inputs,
                         self.forced if requantized else -1.0, requantized, self.codes,
                         self.forced_inputs, self.diverging, *qualities)


# ------------------------------------------------------------------ inputs


def feeds(batches: Sequence[Mapping], input_names: Sequence[str],
          shapes: Mapping[str, tuple]) -> Iterator[dict]:
    """The batches as inputs of the library's static shapes: whole, or row by row when the
    library was compiled for batch 1; other axes zero-padded or cut to the static extent
    (MiniLM's evaluation batches are shorter than its 64-token example). Both runtimes get
    the same padded input, so the comparison stays exact."""
    for parts in _batch_parts(batches, input_names, shapes):
        yield from parts


def _batch_parts(batches, input_names, shapes) -> Iterator[list[dict]]:
    for batch in batches:
        feed = {n: np.asarray(batch[n]) for n in input_names}
        batched = [n for n in input_names if len(shapes[n]) > 0]   # scalars (a sample rate) stay whole
        rows = len(feed[batched[0]]) if batched else 1
        if batched and all(shapes[n][0] == 1 for n in batched) and rows > 1:
            parts = [{n: feed[n][i:i + 1] if n in batched else feed[n] for n in input_names}
                     for i in range(rows)]
        else:
            parts = [feed]
        yield [{n: _fit(part[n], tuple(shapes[n])) for n in input_names} for part in parts]


def _fit(array: np.ndarray, shape: tuple) -> np.ndarray:
    if array.shape == shape:
        return array
    if array.ndim != len(shape):
        raise ValueError(f"input of shape {array.shape} does not fit the library's {shape}")
    out = np.zeros(shape, dtype=array.dtype)
    common = tuple(slice(0, min(a, b)) for a, b in zip(array.shape, shape))
    out[common] = array[common]
    return out


def _join(rows: list[list[np.ndarray]]) -> list[np.ndarray]:
    """One batch's outputs from its row-by-row outputs."""
    if len(rows) == 1:
        return rows[0]
    return [np.concatenate(parts) if parts[0].ndim else np.stack(parts) for parts in zip(*rows)]


# ------------------------------------------------------------------ teacher forcing


def requantizers(model) -> list:
    """Main-graph quantizers of computed tensors (not of constants, not of a graph input):
    where float differences of a few ulps can change integer codes."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    inputs = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    computed: set[str] = set()
    found = []
    for node in graph.node:
        reads = set(node.input) | _outer_reads(node)
        if reads & (inputs | computed):
            computed.update(node.output)
            if (node.op_type in REQUANTIZERS and node.input[0] in computed
                    and not set(node.output) & outputs):
                found.append(node)
    return found


def _outer_reads(node) -> set[str]:
    names = set()
    for attr in node.attribute:
        for inner in attr.g.node:
            names |= set(inner.input) | _outer_reads(inner)
    return names


def _teacher_names(model, quantizers) -> list[str]:
    """Graph outputs, then every quantizer's float input and outputs, once each."""
    names = [o.name for o in model.graph.output]
    for node in quantizers:
        names += [node.input[0], *node.output]
    return list(dict.fromkeys(names))


@dataclass
class _Plain:
    session: object
    names: list[str]


def _plain_session(model, names: list[str]) -> _Plain:
    """ORT without graph optimizations (the graph's own arithmetic), every name an output."""
    import onnxruntime as ort
    from onnx import helper

    copy = type(model)()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    copy.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in present)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(copy.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return _Plain(session, names)


@dataclass
class _Cut:
    vm: object
    inputs: list[str]          # graph inputs, then cut tensors, then probes' float inputs
    outputs: list[str]         # graph outputs, watched float inputs, probe outputs
    references: list[str]      # the ORT tensor each output is compared with


def _cut_library(model, quantizers, input_names, feed, teacher) -> _Cut:
    """A host library of the graph cut at every requantizer (:func:`cut_graph`)."""
    from ..device_profiles import resolve_target
    from .tvm_compile import compile_onnx, load_local

    cut, fed, outputs, references = cut_graph(model, quantizers, teacher)
    shapes = {n: tuple(feed[n].shape) for n in input_names}
    shapes.update({n: tuple(_teacher_value(teacher, n).shape) for n in fed})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cut.onnx"
        path.write_bytes(cut.SerializeToString())
        library = compile_onnx(path, shapes, resolve_target("host"), use_tuning=False)
    return _Cut(load_local(library.path), list(input_names) + fed, outputs, references)


def cut_graph(model, quantizers, teacher: Mapping[str, np.ndarray]):
    """The graph with every quantizer's outputs turned into graph inputs (to be fed ORT's), its
    float input into a graph output, and a copy of it (the probe) reading ORT's float input
    from the input ``<x>__tvm_probe``. Returns (model, new inputs, outputs, the ORT tensor each
    output is compared with); ``teacher`` (ORT's values on one input) gives types and shapes."""
    from onnx import helper

    cut = type(model)()
    cut.CopyFrom(model)
    graph = cut.graph
    removed = {id(n) for n in quantizers}
    keep = [n for m, n in zip(model.graph.node, graph.node) if id(m) not in removed]
    del graph.node[:]
    graph.node.extend(keep)
    probed = list(dict.fromkeys(node.input[0] for node in quantizers))
    fed = [o for node in quantizers for o in node.output] + [x + PROBE for x in probed]
    outputs = [o.name for o in graph.output]
    outputs += [x for x in probed if x not in outputs]
    references = list(outputs)
    for k, node in enumerate(quantizers):
        probe = [f"{o}{PROBE}{k}" for o in node.output]
        graph.node.append(helper.make_node(node.op_type, [node.input[0] + PROBE, *node.input[1:]],
                                           probe, name=f"{node.name}{PROBE}{k}",
                                           **{a.name: helper.get_attribute_value(a)
                                              for a in node.attribute}))
        outputs += probe
        references += list(node.output)
    graph.input.extend(_value_info(n, _teacher_value(teacher, n)) for n in fed)
    del graph.output[:]
    graph.output.extend(_value_info(n, teacher[r]) for n, r in zip(outputs, references))
    return cut, fed, outputs, references


def _teacher_value(teacher: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """ORT's value of a cut tensor, or of the float input a probe reads."""
    return teacher[name[:-len(PROBE)] if name.endswith(PROBE) else name]


def _value_info(name: str, value: np.ndarray):
    from onnx import helper

    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                         list(value.shape))


def _forced_check(cut: _Cut, feed: Mapping, teacher: Mapping, tally: _Tally) -> None:
    got = _run(cut.vm, [feed[n] if n in feed else _teacher_value(teacher, n) for n in cut.inputs])
    for name, ours, ref in zip(cut.outputs, got, cut.references):
        want = teacher[ref]
        if np.issubdtype(want.dtype, np.integer):
            tally.codes += int(np.count_nonzero(ours != want))
        else:
            tally.forced = max(tally.forced, _difference([ours], [want]))
    tally.forced_inputs += 1


# ------------------------------------------------------------------ measures


def _run(vm, args: Sequence[np.ndarray]) -> list[np.ndarray]:
    import tvm

    from .tvm_compile import _to_numpy

    return _to_numpy(vm["main"](*[tvm.runtime.tensor(np.require(a, requirements="C"))
                                  for a in args]))


def _qualities(score, outputs: Mapping[str, list]) -> tuple:
    """(library, ORT optimized, ORT's graph arithmetic, metric name) on the same inputs;
    Nones without a scorer."""
    if score is None:
        return None, None, None, ""
    mine = score(outputs["tvm"])
    return mine.value, score(outputs["ort"]).value, score(outputs["graph"]).value, mine.metric


def _difference(got: list, want: list) -> float:
    """The worst of the outputs' differences, each as a share of the ORT tensor's range."""
    from .board_check import share

    return max((share(a, b) for a, b in zip(got, want, strict=True)), default=0.0)
