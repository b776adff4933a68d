"""Which knobs a model offers: derived from its layers, never hard-coded per model.

Returns plain :class:`Knob` records; the search layer turns them into Optuna
parameters and this package knows nothing of Optuna.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .plan import PRUNE_RATIO, QUANT, RANK_RATIO, VOCAB

PRUNE_CHOICES = (0.0, 0.25, 0.5, 0.75)
RANK_CHOICES = (1.0, 0.5, 0.25, 0.125)
EMBEDDING_RANK_CHOICES = (1.0, 0.5, 0.25, 0.125, 0.0625)
QUANT_CHOICES = ("float", "w8", "w4", "w8a8")
VOCAB_CHOICES = ("full", "corpus")
EMBEDDING_QUANT_CHOICES = ("float", "w8")   # rows are gathered; no int8 matmul to run
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


def torch_knobs(model, example_args: Sequence, input_names: Sequence[str] = ()) -> list[Knob]:
    """Knobs of a torch model: structured pruning, low-rank rank and quantization per layer,
    and vocabulary pruning for embeddings fed straight from a model input."""
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
            knobs.append(Knob(name, QUANT, EMBEDDING_QUANT_CHOICES, "quantization"))
        elif isinstance(module, nn.Linear):
            ranks = _useful_ranks(module.out_features, module.in_features, 1, RANK_CHOICES)
            knobs += _rank_knob(name, ranks)
            knobs.append(Knob(name, QUANT, QUANT_CHOICES, "quantization"))
        elif isinstance(module, nn.Conv2d):
            if module.groups == 1:
                k = module.kernel_size[0] * module.kernel_size[1]
                knobs += _rank_knob(name, _useful_ranks(module.out_channels, module.in_channels, k,
                                                        RANK_CHOICES))
            knobs.append(Knob(name, QUANT, QUANT_CHOICES, "quantization"))
    return knobs


def onnx_knobs(weight_names: Sequence[str]) -> list[Knob]:
    """Knobs of an ONNX-only model: quantization of each weight initializer."""
    return [Knob(name, QUANT, QUANT_CHOICES, "quantization") for name in weight_names]


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
