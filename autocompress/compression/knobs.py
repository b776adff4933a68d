"""Which knobs a model offers: each registered technique's offer, never hard-coded per model.

Returns plain :class:`~.records.Knob` records (re-exported here with :class:`~.records.Skip`);
the search layer turns them into Optuna parameters and this package knows nothing of Optuna.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from . import registry
from .records import Knob, Skip  # noqa: F401 (re-exported)


def offered(model, example_args: Sequence,
            input_names: Sequence[str] = ()) -> tuple[list[Knob], list[Skip]]:
    """Every registered technique's offer on a torch model, in the registry's order: its
    knobs, and where it does not apply and why (vocabulary pruning only where
    ``input_names`` say which embedding an input feeds)."""
    knobs: list[Knob] = []
    skips: list[Skip] = []
    for offer in registry.offers():
        found, missed = offer(model, example_args, input_names)
        knobs += found
        skips += missed
    return knobs, skips


def torch_knobs(model, example_args: Sequence, input_names: Sequence[str] = ()) -> list[Knob]:
    return offered(model, example_args, input_names)[0]


def skipped_knobs(model, example_args: Sequence, input_names: Sequence[str] = ()) -> list[Skip]:
    return offered(model, example_args, input_names)[1]


def onnx_knobs(weights: Mapping[str, tuple[str, tuple]]) -> list[Knob]:
    """Knobs of an ONNX-only model: quantization, sparsity and clustering of each weight
    (``weights``: name -> (kind, shape), :func:`.onnx_graph.weights`) and the model-wide
    calibration method."""
    from .weights.knobs import onnx_weight_knobs

    return onnx_weight_knobs(weights)[0]


def onnx_skips(weights: Mapping[str, tuple[str, tuple]]) -> list[Skip]:
    """Where an ONNX-only model's weight techniques are not offered, and why."""
    from .weights.knobs import onnx_weight_knobs

    return onnx_weight_knobs(weights)[1]
