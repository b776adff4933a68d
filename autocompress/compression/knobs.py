"""Which knobs a model offers: derived from its layers, never hard-coded per model.

Returns plain :class:`Knob` records; the search layer turns them into Optuna
parameters and this package knows nothing of Optuna.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from .plan import PRUNE_RATIO, RANK_RATIO, VOCAB
from .weight_knobs import EMBEDDING_QUANT_CHOICES, QUANT_CHOICES  # noqa: F401 (re-exported)

PRUNE_CHOICES = (0.0, 0.25, 0.5, 0.75)
RANK_CHOICES = (1.0, 0.5, 0.25, 0.125)
EMBEDDING_RANK_CHOICES = (1.0, 0.5, 0.25, 0.125, 0.0625)
VOCAB_CHOICES = ("full", "corpus")
MIN_FACTOR_DIM = 16                          # smaller layers gain nothing from factorising
MIN_EMBEDDING_ROWS = 1000


@dataclass(frozen=True)
class Knob:
    """One decision the search makes: ``unit`` gets ``name`` set to one of ``choices``.

    ``choices[0]`` is always "leave as is", so a plan of first choices is the
    uncompressed model.
    """

    unit: str
    name: str
    choices: tuple
    technique: str

    @property
    def key(self) -> str:
        return f"{self.unit}:{self.name}"


@dataclass(frozen=True)
class Skip:
    """A technique not offered for a unit, and why: a missing knob is explained, not silent."""

    unit: str
    technique: str
    reason: str

    def message(self) -> str:
        return f"{self.technique} not offered for {self.unit!r}: {self.reason}"


def skipped_knobs(model, example_args: Sequence) -> list[Skip]:
    """Where the structural techniques (depth, sharing, decomposition, replacing) and the
    weight techniques (2/3-bit quantization, sparsity, clustering) do not apply."""
    from .structural import structural_knobs
    from .weight_knobs import torch_weight_knobs

    from .early_exit import exit_knobs

    return (structural_knobs(model, example_args)[1] + torch_weight_knobs(model)[1]
            + exit_knobs(model, example_args)[1])


def torch_knobs(model, example_args: Sequence, input_names: Sequence[str] = ()) -> list[Knob]:
    """Knobs of a torch model: structured pruning, low-rank rank, quantization, sparsity and
    clustering per layer, vocabulary pruning for embeddings fed straight from a model input,
    and the model-wide calibration method of static int8."""
    from torch import nn

    from .pruning import attention_units, ffn_units, group_units
    from .vocab import embedding_inputs

    knobs: list[Knob] = []
    attn, ffn = attention_units(model), ffn_units(model)
    prune_units = [(n, "attention heads") for n in attn] + [(n, "ffn neurons") for n in ffn]
    if not prune_units:
        prune_units = [(n, "channels") for n in group_units(model, example_args)]
    for name, what in prune_units:
        knobs.append(Knob(name, PRUNE_RATIO, PRUNE_CHOICES, f"structured pruning ({what})"))
    fed = embedding_inputs(model, example_args, input_names) if input_names else {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and module.num_embeddings >= MIN_EMBEDDING_ROWS:
            if name in fed:
                knobs.append(Knob(name, VOCAB, VOCAB_CHOICES, "vocabulary pruning"))
            ranks = _useful_ranks(module.num_embeddings, module.embedding_dim, 1,
                                  EMBEDDING_RANK_CHOICES)
            knobs += _rank_knob(name, ranks)
        elif isinstance(module, nn.Linear):
            ranks = _useful_ranks(module.out_features, module.in_features, 1, RANK_CHOICES)
            knobs += _rank_knob(name, ranks)
        elif isinstance(module, nn.Conv2d):
            if module.groups == 1:
                k = module.kernel_size[0] * module.kernel_size[1]
                knobs += _rank_knob(name, _useful_ranks(module.out_channels, module.in_channels, k,
                                                        RANK_CHOICES))
    from .structural import structural_knobs
    from .weight_knobs import torch_weight_knobs

    from .early_exit import exit_knobs

    return (knobs + torch_weight_knobs(model)[0] + structural_knobs(model, example_args)[0]
            + exit_knobs(model, example_args)[0])


def onnx_knobs(weights: Mapping[str, tuple[str, tuple]]) -> list[Knob]:
    """Knobs of an ONNX-only model: quantization, sparsity and clustering of each weight
    (``weights``: name -> (kind, shape), :func:`.onnx_graph.weights`) and the model-wide
    calibration method."""
    from .weight_knobs import onnx_weight_knobs

    return onnx_weight_knobs(weights)[0]


def onnx_skips(weights: Mapping[str, tuple[str, tuple]]) -> list["Skip"]:
    """Where an ONNX-only model's weight techniques are not offered, and why."""
    from .weight_knobs import onnx_weight_knobs

    return onnx_weight_knobs(weights)[1]


def _rank_knob(name: str, ranks: tuple) -> list[Knob]:
    return [Knob(name, RANK_RATIO, ranks, "low-rank factorization")] if len(ranks) > 1 else []


def _useful_ranks(out_dim: int, in_dim: int, kernel: int, choices: tuple) -> tuple:
    """Rank ratios whose factorised form really holds fewer parameters than the layer."""
    full = min(out_dim, in_dim * kernel)
    if full < MIN_FACTOR_DIM:
        return (1.0,)
    keep = [1.0]
    for ratio in choices[1:]:
        rank = factor_rank(full, ratio)
        if factor_saves(out_dim, in_dim * kernel, rank):
            keep.append(ratio)
    return tuple(keep)


def factor_saves(rows: int, cols: int, rank: int) -> bool:
    """Whether a rank-``rank`` factor pair of a rows x cols weight holds fewer parameters."""
    return rank * (rows + cols) < rows * cols


def factor_rank(full_rank: int, ratio: float) -> int:
    """The rank a ratio selects, snapped up to a multiple of 8 so kernels stay regular."""
    rank = max(1, round(full_rank * ratio))
    if rank >= 8:
        rank = min(full_rank, -(-rank // 8) * 8)
    return rank
