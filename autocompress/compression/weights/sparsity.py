"""Unstructured magnitude pruning of one weight tensor.

The smallest-magnitude entries are set to exactly zero; ties break by position (a stable
sort), so the same weight and fraction always zero the same entries. Storage of the
result (a 1-bit mask plus only the kept entries) is :mod:`.packing`'s job.
"""
from __future__ import annotations

import numpy as np

SPARSITY_CHOICES = (0.0, 0.5, 0.75, 0.9)


def pruned_count(n: int, fraction: float) -> int:
    """How many of ``n`` entries a ``fraction`` removes (rounded to the nearest entry)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {fraction}")
    return int(round(n * fraction))


def magnitude_prune(weight: np.ndarray, fraction: float) -> np.ndarray:
    """A copy of ``weight`` with its ``pruned_count`` smallest-|w| entries set to zero."""
    flat = np.array(weight, copy=True).reshape(-1)
    count = pruned_count(flat.size, fraction)
    if count:
        order = np.argsort(np.abs(flat), kind="stable")
        flat[order[:count]] = 0
    return flat.reshape(weight.shape)
