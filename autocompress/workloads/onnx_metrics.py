"""Quality of a compressed ONNX model without labels: how closely it follows the original.

- ``cosine``: per output, the cosine between the compressed and original values over
  all evaluation input sets joined (so a one-value output, a speech probability, counts
  across the set rather than trivially per input), averaged over outputs.
- ``top1``: the share of rows whose argmax matches the original's, for an output shaped
  ``[N, C]`` (class scores). Chosen automatically when the first output has that shape.
- ``module:function``: the user's own, ``function(outputs, reference) -> float`` (higher
  is better), both lists (one per evaluation input set) of ``{output name: array}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .base import Quality
from .user_code import SPEC

BUILTIN = ("cosine", "top1")
MIN_CLASSES = 2


@dataclass(frozen=True)
class Scorer:
    score: Callable
    description: str


def choose(metric: str | None, output_names: Sequence[str], reference: Sequence) -> Scorer:
    """The scorer ``metric`` names, or the automatic one (top-1 for class scores, else cosine)."""
    from .base import WorkloadError

    if metric is None:
        metric = "top1" if classifier_shaped(reference) else "cosine"
    if metric == "cosine":
        return Scorer(lambda outputs: cosine_quality(outputs, reference),
                      "output cosine to the original (all outputs, evaluation set joined)")
    if metric == "top1":
        if not classifier_shaped(reference):
            shape = tuple(reference[0][0].shape) if reference and reference[0] else ()
            raise WorkloadError(f"--metric top1 needs a first output shaped [N, classes]; "
                                f"this model's is {list(shape)}")
        return Scorer(lambda outputs: top1_quality(outputs, reference),
                      f"top-1 agreement with the original's {output_names[0]!r}")
    if SPEC.fullmatch(metric):
        function = _load_metric(metric)
        return Scorer(lambda outputs: user_quality(function, metric, output_names, outputs, reference),
                      f"{metric} against the original's outputs")
    raise WorkloadError(f"unknown --metric {metric!r}: use {', '.join(BUILTIN)} or package.module:function")


def classifier_shaped(reference: Sequence) -> bool:
    """The first output is float ``[N, C]`` with ``C >= 2`` in every evaluation set."""
    firsts = [out[0] for out in reference if len(out)]
    return bool(firsts) and all(a.ndim == 2 and a.shape[1] >= MIN_CLASSES and
                                np.issubdtype(a.dtype, np.floating) for a in firsts)


def cosine_quality(outputs: Sequence, reference: Sequence) -> Quality:
    per_output = []
    for k in range(len(reference[0])):
        got = np.concatenate([o[k].astype(np.float64).ravel() for o in outputs])
        want = np.concatenate([r[k].astype(np.float64).ravel() for r in reference])
        per_output.append(cosine(got, want))
    value = float(np.mean(per_output))
    return Quality(value, "output_cosine", {"cosine_mean": value, "cosine_min": float(np.min(per_output))})


def top1_quality(outputs: Sequence, reference: Sequence) -> Quality:
    got = np.concatenate([np.argmax(o[0], axis=1) for o in outputs])
    want = np.concatenate([np.argmax(r[0], axis=1) for r in reference])
    value = float(np.mean(got == want))
    return Quality(value, "top1_agreement",
                   {"top1_agreement": value, "cosine_mean": cosine_quality(outputs, reference).value})


def user_quality(function: Callable, name: str, output_names, outputs, reference) -> Quality:
    def named(sets):
        return [dict(zip(output_names, out)) for out in sets]

    value = function(named(outputs), named(reference))
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"--metric {name} returned {type(value).__name__}, expected a number") from None
    return Quality(value, name, {})


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape or not np.all(np.isfinite(a)):
        return 0.0
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else float(np.allclose(a, b))


def _load_metric(spec: str) -> Callable:
    from .base import WorkloadError
    from .user_code import import_attribute

    function = import_attribute(spec, "--metric")
    if not callable(function):
        raise WorkloadError(f"--metric {spec!r} is a {type(function).__name__}, not a function")
    return function
