"""Does a host TVM library compute what ONNX Runtime computes? Checked on evaluation batches.

ONNX Runtime runs two arithmetics of the same file: the graph as written (no graph
optimizations) and its optimized kernels, which the search measures. They differ for
weight-only int formats: ORT rewrites ``DequantizeLinear -> MatMul`` into ``MatMulNBits``
with int8 activations (measured: up to 2.1% of the output range on the tiny MLP, w4 +
sparsity), and static QDQ into integer kernels. TVM computes one of the two exactly, so a
library agrees when it is within ``EXACT_TOLERANCE`` of either, and within
``KERNEL_TOLERANCE`` of both.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

EXACT_TOLERANCE = 1e-5
"""Largest difference, as a share of ORT's output range, to the ORT arithmetic TVM follows
(measured: float formats <= 8e-7, integer kernels 0)."""
KERNEL_TOLERANCE = 0.03
"""Largest difference to the other ORT arithmetic (measured worst: 2.1%)."""


@dataclass(frozen=True)
class Agreement:
    """Worst output differences over the inputs, as shares of ORT's output range."""

    exact: float        # vs ORT with graph optimizations disabled (the graph as written)
    optimized: float    # vs ORT's optimized session (what the search measures)
    inputs: int

    @property
    def ok(self) -> bool:
        return (min(self.exact, self.optimized) <= EXACT_TOLERANCE
                and max(self.exact, self.optimized) <= KERNEL_TOLERANCE)

    def describe(self) -> str:
        return (f"{self.inputs} inputs: within {min(self.exact, self.optimized):.1e} of ONNX "
                f"Runtime's output range (limit {EXACT_TOLERANCE:.0e}), "
                f"{max(self.exact, self.optimized):.2%} of its other arithmetic "
                f"(limit {KERNEL_TOLERANCE:.0%})")


def compare(library: Path | str, onnx_path: Path | str, batches: Sequence[Mapping],
            input_names: Sequence[str], shapes: Mapping[str, tuple]) -> Agreement:
    """Run the host library and both ORT arithmetics on every input of ``batches``."""
    import onnxruntime as ort
    import tvm

    from . import ort_runner
    from .tvm_compile import _to_numpy, load_local

    vm = load_local(library)
    optimized = ort_runner.make_session(onnx_path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    plain = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    worst = {"exact": 0.0, "optimized": 0.0}
    count = 0
    for feed in feeds(batches, input_names, shapes):
        got = _to_numpy(vm["main"](*[tvm.runtime.tensor(np.require(feed[n], requirements="C"))
                                     for n in input_names]))
        for key, session in (("exact", plain), ("optimized", optimized)):
            worst[key] = max(worst[key], _difference(got, session.run(None, feed)))
        count += 1
    return Agreement(worst["exact"], worst["optimized"], count)


def feeds(batches: Sequence[Mapping], input_names: Sequence[str],
          shapes: Mapping[str, tuple]) -> Iterator[dict]:
    """The batches as inputs of the library's static shapes: whole, or row by row when the
    library was compiled for batch 1; other axes zero-padded or cut to the static extent
    (MiniLM's evaluation batches are shorter than its 64-token example). Both runtimes get
    the same padded input, so the comparison stays exact."""
    for batch in batches:
        feed = {n: np.asarray(batch[n]) for n in input_names}
        batched = [n for n in input_names if len(shapes[n]) > 0]   # scalars (a sample rate) stay whole
        rows = len(feed[batched[0]]) if batched else 1
        if batched and all(shapes[n][0] == 1 for n in batched) and rows > 1:
            parts = [{n: feed[n][i:i + 1] if n in batched else feed[n] for n in input_names}
                     for i in range(rows)]
        else:
            parts = [feed]
        for part in parts:
            yield {n: _fit(part[n], tuple(shapes[n])) for n in input_names}


def _fit(array: np.ndarray, shape: tuple) -> np.ndarray:
    if array.shape == shape:
        return array
    if array.ndim != len(shape):
        raise ValueError(f"input of shape {array.shape} does not fit the library's {shape}")
    out = np.zeros(shape, dtype=array.dtype)
    common = tuple(slice(0, min(a, b)) for a, b in zip(array.shape, shape))
    out[common] = array[common]
    return out


def _difference(got: list, want: list) -> float:
    worst = 0.0
    for a, b in zip(got, want, strict=True):
        if a.shape != b.shape:
            return float("inf")
        b = b.astype(np.float64)
        scale = max(float(np.abs(b).max()) if b.size else 0.0, 1e-12)
        worst = max(worst, float(np.abs(a.astype(np.float64) - b).max()) / scale if b.size else 0.0)
    return worst
