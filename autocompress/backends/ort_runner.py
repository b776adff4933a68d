"""ONNX Runtime on the host: sessions, batch runs, timed runs and peak memory.

Timing follows one config (warm-up, repeats) so every measurement says how it was taken.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

RUNTIME = f"onnxruntime {ort.__version__} (CPUExecutionProvider)"


@dataclass(frozen=True)
class TimingConfig:
    """How latency is measured: ``warmup`` untimed runs, then ``repeat`` timed runs."""

    warmup: int = 5
    repeat: int = 30
    threads: int = int(os.environ.get("AUTOCOMPRESS_THREADS", "2"))
    """ONNX Runtime intra-op threads; ``AUTOCOMPRESS_THREADS`` sets it (benchmarks running
    two searches side by side on 2 cores give each one thread)."""


@dataclass(frozen=True)
class LatencyMeasurement:
    median_s: float
    p10_s: float
    p90_s: float
    repeats: int
    runtime: str = RUNTIME

    def to_dict(self) -> dict:
        return asdict(self)


def make_session(model: Path | str | bytes, threads: int = 2) -> ort.InferenceSession:
    """A CPU session on a model file, or on serialized model bytes."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_batches(session: ort.InferenceSession, batches: Sequence[dict]) -> list[list[np.ndarray]]:
    """Outputs of every batch, in order (what a workload's scorer consumes)."""
    names = {i.name for i in session.get_inputs()}
    return [session.run(None, {k: v for k, v in b.items() if k in names}) for b in batches]


def measure_latency(session: ort.InferenceSession, example: dict,
                    config: TimingConfig = TimingConfig()) -> LatencyMeasurement:
    """Median and spread (p10/p90) of single-batch latency after warm-up."""
    feed = {i.name: example[i.name] for i in session.get_inputs()}
    for _ in range(config.warmup):
        session.run(None, feed)
    times = []
    for _ in range(config.repeat):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return LatencyMeasurement(*spread(times), config.repeat)


def relative_latency(session: ort.InferenceSession, reference: ort.InferenceSession,
                     example: dict, config: TimingConfig = TimingConfig(),
                     rounds: int = 5) -> float:
    """Median over ``rounds`` of ``session``'s median latency over ``reference``'s, the two
    timed in turn: a ratio holds where this machine's speed swings between moments."""
    ratios = [measure_latency(session, example, config).median_s
              / measure_latency(reference, example, config).median_s for _ in range(rounds)]
    return statistics.median(ratios)


def spread(times: Sequence[float]) -> tuple[float, float, float]:
    """(median, p10, p90) of timed runs: the one definition every measured latency uses."""
    q = statistics.quantiles(times, n=10)
    return statistics.median(times), q[0], q[-1]


def measure_peak_ram(path: Path | str, example: dict, threads: int = 2,
                     timeout_s: float = 120.0) -> int | None:
    """Peak resident-memory growth (bytes) of loading the model and running one inference,
    measured in a fresh process: what a deployment that has run nothing else sees.

    In a long-lived process the allocator reuses what earlier sessions freed, so the growth
    depended on what ran before (0 bytes on over half of one run's front). Here a new
    interpreter (``python -c``, not multiprocessing: no user ``__main__`` is re-imported)
    imports ONNX Runtime, loads the example from a ``.npz`` file and measures once. None
    (never 0) where /proc does not allow it or the child failed: the caller then reports
    the cost model's prediction instead.
    """
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="autocompress-ram-") as tmp:
        feed = Path(tmp) / "example.npz"
        np.savez(feed, **example)
        code = "from autocompress.backends.ort_runner import _peak_ram_main; _peak_ram_main()"
        try:
            done = subprocess.run([sys.executable, "-c", code, str(path), str(feed), str(threads)],
                                  capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
    lines = done.stdout.split()
    return int(lines[-1]) if done.returncode == 0 and lines and lines[-1].isdigit() else None


def _peak_ram_main() -> None:
    """The child of :func:`measure_peak_ram`: prints the growth in bytes (or ``none``)."""
    import sys

    path, feed, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with np.load(feed) as data:
        example = {k: data[k] for k in data.files}
    print(peak_ram_here(path, example, threads) or "none")


def peak_ram_here(path: Path | str, example: dict, threads: int = 2) -> int | None:
    """Peak RSS growth of loading ``path`` and running once *in this process* (resets the
    kernel's high-water mark, ``/proc/self/clear_refs``); only meaningful in a process that
    has run no model yet (see :func:`measure_peak_ram`). None: not positive, or no /proc."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        base = _status_kb("VmRSS")
        session = make_session(path, threads)
        feed = {i.name: example[i.name] for i in session.get_inputs()}
        session.run(None, feed)
        peak = _status_kb("VmHWM")
        del session
    except OSError:
        return None
    return (peak - base) * 1024 if peak > base else None


def _status_kb(field: str) -> int:
    with open(f"/proc/{os.getpid()}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")
