"""Evaluation fidelity: how much of its training budget a candidate gets (multi-fidelity search).

A *proxy* evaluation trains everything a plan trains (distillation, replaced modules'
local fits, early-exit heads) for ``PROXY_SCALE`` of the steps and calibrates static
quantization on fewer batches; the artifact is otherwise the same (same graph, same size).
The search promotes only promising proxies to a full evaluation (search/study.py).
"""
from __future__ import annotations

import contextlib
import contextvars

PROXY_SCALE = 0.25
_SCALE = contextvars.ContextVar("autocompress_training_scale", default=1.0)


@contextlib.contextmanager
def proxy(scale: float = PROXY_SCALE):
    """Inside: every training loop and calibration pass runs at ``scale`` of its budget."""
    token = _SCALE.set(scale)
    try:
        yield
    finally:
        _SCALE.reset(token)


def steps(n: int) -> int:
    """``n`` training steps at the current fidelity (at least one when ``n`` > 0)."""
    return n if n <= 0 else max(1, round(n * _SCALE.get()))


def scale() -> float:
    return _SCALE.get()
