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


def spread(times: Sequence[float]) -> tuple[float, float, float]:
    """(median, p10, p90) of timed runs: the one definition every measured latency uses."""
    q = statistics.quantiles(times, n=10)
    return statistics.median(times), q[0], q[-1]


def measure_peak_ram(path: Path | str, example: dict, threads: int = 2) -> int | None:
    """Peak resident-memory growth (bytes) while loading the model and running one inference.

    Resets the kernel's high-water mark (``/proc/self/clear_refs``), so it is a real
    measurement of this process; returns None where the kernel does not allow it.
    """
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
    return max(0, peak - base) * 1024


def _status_kb(field: str) -> int:
    with open(f"/proc/{os.getpid()}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")
