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


def trains(plan) -> bool:
    """Whether a plan's build has a training or calibration budget to scale."""
    from .plan import CALIBRATION, DISTILL_STEPS, EXIT_AFTER, REPLACE, WHOLE_MODEL

    whole = plan.units.get(WHOLE_MODEL, {})
    return (int(whole.get(DISTILL_STEPS, 0)) > 0 or whole.get(CALIBRATION, "none") != "none"
            or any(k.get(REPLACE, "none") != "none" or k.get(EXIT_AFTER, "none") != "none"
                   for k in plan.units.values()))
