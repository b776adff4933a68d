"""The Workload record: a model, the data it sees, and how its quality is scored.

Everything the search needs to know about a user's problem passes through this
one record, so compression, backends and search never import a workload module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

Batch = Mapping[str, np.ndarray]
"""One batch of model inputs, keyed by ONNX input name."""

OUTPUT_KINDS = ("logits", "embedding")

Outputs = Sequence[np.ndarray]
"""The model's outputs for one batch, in ``Workload.output_names`` order."""


class WorkloadError(ValueError):
    """A model that cannot be used; the message says which file or name and why."""


@dataclass(frozen=True)
class Quality:
    """A quality score; ``value`` is the objective (higher is better)."""

    value: float
    metric: str
    details: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"value": self.value, "metric": self.metric, "details": dict(self.details)}


Scorer = Callable[[Sequence[Outputs]], Quality]
"""Scores the outputs of every evaluation batch, in ``Workload.evaluation`` order."""


@dataclass(frozen=True)
class Workload:
    """Model + calibration data + held-out evaluation data + metric.

    Exactly one of ``model`` (a float ``torch.nn.Module`` in eval mode, which
    unlocks structural techniques: pruning, low-rank) and ``onnx_path`` (an
    ONNX file: quantization only) is set.

    ``example`` is one batch-1 input used for ONNX export and latency timing.
    ``calibration`` and ``evaluation`` are disjoint lists of batches.
    ``calibration`` also serves as the corpus for vocabulary pruning.
    ``training`` (optional, unlabeled, disjoint from both) feeds recovery training
    (distillation, QAT, the finalize stage); without it they fall back to ``calibration``
    and ``training_source`` says so. It may be a lazy sequence (MiniLM gathers its text on
    first use), so building a workload stays cheap.
    ``score`` receives the model outputs for every evaluation batch and returns
    a :class:`Quality` (higher is better).
    """

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    example: Batch
    calibration: Sequence[Batch]
    evaluation: Sequence[Batch]
    score: Scorer
    model: object | None = None
    onnx_path: Path | None = None
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None
    description: str = ""
    vocab_fallback_id: int | None = None
    """Token id that ids outside a pruned vocabulary map to (e.g. ``[UNK]``)."""
    training: Sequence[Batch] = ()
    training_source: str = ""
    """Where the training batches come from, in words (shown in reports)."""
    output_kind: str = "logits"
    """What the first output is, for distillation: "logits" (class scores: KL of softened
    softmaxes) or "embedding" (vectors: squared error + cosine)."""
    data_source: str = ""
    """Where calibration and evaluation inputs come from, in words (ONNX files: the
    user's ``--data`` or synthetic inputs)."""
    synthetic_inputs: bool = False
    """Quality was measured on made-up inputs: every report says so."""
    preparation: tuple[str, ...] = ()
    """What was done to a user's ONNX file before compression (onnx_prepare.py), in words."""
    techniques_path: str = ""
    """Why only some techniques apply to this model (an ONNX file kept as ONNX), in words."""
    held_details: tuple[str, ...] = ()
    """Quality details on the quality's own scale that a user needs held as high as the
    quality itself (MiniLM: Spearman beside mean cosine). The finalize stage ranks its
    probes by the lowest of them and the quality: the plan it trains longest is the one
    most likely to keep all of them."""

    def __post_init__(self) -> None:
        if (self.model is None) == (self.onnx_path is None):
            raise ValueError("a Workload needs exactly one of model= or onnx_path=")
        if not self.evaluation:
            raise ValueError(f"workload {self.name!r} has no evaluation batches")
        if self.output_kind not in OUTPUT_KINDS:
            raise ValueError(f"workload {self.name!r}: output_kind {self.output_kind!r} is not one "
                             f"of {OUTPUT_KINDS}")
        if not self.training_source:
            object.__setattr__(self, "training_source", "calibration batches (no training set given)"
                               if not self.training else "training batches given by the workload")
        missing = set(self.input_names) - set(self.example)
        if missing:
            raise ValueError(f"workload {self.name!r}: example lacks inputs {sorted(missing)}")

    def vocabulary_batches(self) -> list:
        """The batches whose tokens vocabulary pruning keeps: calibration and the training
        set (recovery trains the kept rows on it; the evaluation set is never read)."""
        return [*self.calibration, *self.training]

    def recovery_batches(self) -> Sequence:
        """The batches recovery training runs on: the training set, else calibration."""
        return self.training if self.training else self.calibration


class LazyBatches(Sequence):
    """Batches built on first access (e.g. text gathered and tokenised at run time)."""

    def __init__(self, build: Callable[[], Sequence[Batch]], description: str = ""):
        self._build, self._batches, self.description = build, None, description

    def _get(self) -> Sequence[Batch]:
        if self._batches is None:
            self._batches = list(self._build())
        return self._batches

    def __len__(self) -> int:
        return len(self._get())

    def __getitem__(self, index):
        return self._get()[index]

    def __bool__(self) -> bool:
        return True     # known to exist without building it
