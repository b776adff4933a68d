"""Hypervolume of a search's feasible points, per trial: how fast a search finds good trade-offs.

Objectives are normalised by the uncompressed model (the baseline trial) so runs on different
workloads and targets compare: relative quality q/q0 (maximised), relative latency t/t0 and
relative size s/s0 (minimised). The reference point is quality 0.5*q0, latency 10*t0, size s0:
a point counts only if it keeps at least half the quality, is at most ten times slower (on a
host CPU, weight-only and dynamic int8 formats can be several times slower than float for a
tiny CNN) and is smaller than the original. Optuna's WFG implementation computes the volume.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
from optuna._hypervolume import compute_hypervolume

REFERENCE = (0.5, 10.0, 1.0)
"""(relative quality, relative latency, relative size) of the reference point."""


@dataclass(frozen=True)
class Scale:
    """The baseline's objective values (quality, latency_s, size_bytes)."""

    quality: float
    latency_s: float
    size_bytes: float

    def to_dict(self) -> dict:
        return asdict(self)

    def losses(self, values: Sequence[float]) -> np.ndarray:
        """(quality, latency, size) -> minimised, normalised loss vector."""
        quality, latency, size = values
        return np.array([-quality / self.quality, latency / self.latency_s,
                         size / self.size_bytes], dtype=float)


def reference_losses() -> np.ndarray:
    return np.array([-REFERENCE[0], REFERENCE[1], REFERENCE[2]], dtype=float)


def hypervolume(points: Iterable[Sequence[float]], scale: Scale) -> float:
    """Volume dominated by ``points`` (objective values) up to the reference point."""
    ref = reference_losses()
    losses = [scale.losses(p) for p in points]
    losses = np.array([x for x in losses if np.all(x < ref)])
    if len(losses) == 0:
        return 0.0
    return float(compute_hypervolume(_non_dominated(losses), ref, assume_pareto=True))


def history(points: Sequence[Sequence[float] | None], scale: Scale) -> list[float]:
    """Hypervolume after each trial, in order (``None``: a trial that adds no feasible point)."""
    ref = reference_losses()
    out, front, volume = [], np.empty((0, 3)), 0.0
    for p in points:
        loss = scale.losses(p) if p is not None else None
        if loss is not None and np.all(loss < ref):
            front = _non_dominated(np.vstack([front, loss]))
            volume = float(compute_hypervolume(front, ref, assume_pareto=True))
        out.append(volume)
    return out


def _non_dominated(losses: np.ndarray) -> np.ndarray:
    keep = []
    for i, x in enumerate(losses):
        dominated = np.any(np.all(losses <= x, axis=1) & np.any(losses < x, axis=1))
        if not dominated and not any(np.array_equal(x, losses[j]) for j in keep):
            keep.append(i)
    return losses[keep]
