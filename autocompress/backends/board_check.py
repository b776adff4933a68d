"""Run a TVM export's library on the board, check it against ONNX Runtime, then time it.

This file is copied into every TVM export as ``run_model_tvm.py``, so it imports nothing of
autocompress: only numpy and TVM's runtime (e.g. ``pip install apache-tvm`` on the board).

    python run_model_tvm.py

The check inputs (the first evaluation inputs, at the library's static shapes,
``tvm_check_inputs.npz``) were run at export by ONNX Runtime with graph optimizations off: the
graph as written, which TVM computes (``tvm_expected_outputs.npz``). Each output's largest
difference is taken as a share of that output's range. Without requantized activations every
input must agree within :data:`BOARD_TOLERANCE`. Where activations are requantized
(``export.json``: ``tvm.requantized``), a value a few ulps from a rounding boundary can take the
neighbouring integer code on another CPU and later layers amplify that step on a few inputs
(``backends/tvm_check.py``), so there the median input must agree within the limit and the
outputs' mean cosine to ORT's must be at least :data:`BOARD_COSINE`. Exit code 1 when the check
fails.
"""
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BOARD_TOLERANCE = 1e-3
"""Largest difference to ORT's graph arithmetic, as a share of the output's range. This
machine's host libraries agree within 2e-6 (docs/tvm_formats.md); the margin is for another
CPU's or a GPU's float kernels, and still fails a wrong kernel."""
BOARD_COSINE = 0.99
"""Least mean cosine between the library's outputs and ORT's over the check inputs, where the
graph requantizes activations (static QDQ, w8a8*). docs/tvm_formats.md's *board check* column
gives what this machine's host libraries reach."""
BOARD_INPUTS = 8
"""Evaluation inputs the export saves for this check."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    worst: float
    median: float
    cosine: float
    inputs: int
    requantized: bool

    def describe(self) -> str:
        words = (f"{self.inputs} check inputs: worst {self.worst:.1e}, median {self.median:.1e} "
                 f"of the output range from ONNX Runtime's graph arithmetic, mean cosine "
                 f"{self.cosine:.6f}")
        if self.requantized:
            return words + (f" (requantized graph: median limit {BOARD_TOLERANCE:.0e}, "
                            f"cosine limit {BOARD_COSINE})")
        return words + f" (limit {BOARD_TOLERANCE:.0e})"


def share(got, want) -> float:
    """Largest difference as a share of ``want``'s range (bool exit flags as 0 / 1)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    return float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-12) if want.size else 0.0


def cosine(got, want) -> float:
    """Cosine between one input's outputs, all of them flattened into one vector."""
    a = np.concatenate([np.asarray(g, np.float64).ravel() for g in got])
    b = np.concatenate([np.asarray(w, np.float64).ravel() for w in want])
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norms if norms else float(np.array_equal(a, b))


def verdict(got_rows, want_rows, requantized: bool) -> Verdict:
    """The check over the inputs' outputs (one list of arrays per input)."""
    shares, cosines = [], []
    for got, want in zip(got_rows, want_rows):
        if len(got) != len(want):
            return Verdict(False, float("inf"), float("inf"), 0.0, len(want_rows), requantized)
        shares.append(max(share(g, w) for g, w in zip(got, want)))
        cosines.append(cosine(got, want))
    worst, median, mean = max(shares), statistics.median(shares), statistics.fmean(cosines)
    ok = (median <= BOARD_TOLERANCE and mean >= BOARD_COSINE) if requantized else worst <= BOARD_TOLERANCE
    return Verdict(ok, worst, median, mean, len(shares), requantized)


def _flat(out) -> list:
    return [out.numpy()] if hasattr(out, "numpy") else [x for item in out for x in _flat(item)]


def main() -> None:
    import tvm
    from tvm import relax

    here = Path(__file__).resolve().parent
    manifest = json.loads((here / "export.json").read_text())["tvm"]
    names = json.loads((here / "io_names.json").read_text())
    device = tvm.cuda() if manifest["kind"] == "cuda" else tvm.cpu()
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(here / manifest["library"])), device)
    with np.load(here / "tvm_check_inputs.npz", allow_pickle=False) as saved:
        inputs = [[saved[f"{k}_{i}"] for i in range(len(names["inputs"]))]
                  for k in range(manifest["check_inputs"])]
    with np.load(here / "tvm_expected_outputs.npz", allow_pickle=False) as saved:
        expected = [[saved[f"{k}_{j}"] for j in range(len(names["outputs"]))]
                    for k in range(manifest["check_inputs"])]
    got = [_flat(vm["main"](*[tvm.runtime.tensor(a, device) for a in row])) for row in inputs]
    result = verdict(got, expected, bool(manifest["requantized"]))
    if not result.ok:
        sys.exit(f"outputs differ from the export's record: {result.describe()}")
    args = [tvm.runtime.tensor(a, device) for a in inputs[0]]
    times = []
    for _ in range(30):
        start = time.perf_counter()
        vm["main"](*args)
        device.sync()
        times.append(time.perf_counter() - start)
    print(f"outputs match the export's record: {result.describe()}; "
          f"median latency {statistics.median(times) * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
