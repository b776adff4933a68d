"""Low-rank factorization (truncated SVD): one layer becomes two thinner ones.

Linear W[out,in] -> Linear(in->r) then Linear(r->out); Conv k x k -> Conv k x k (in->r)
then 1x1 (r->out); Embedding V x D -> Embedding V x r then Linear(r->D).
The factor pair is a :class:`LowRank` so later passes know both halves belong to one unit.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from ..plan import RANK_RATIO
from ..records import Knob, parent_and_attr

RANK_CHOICES = (1.0, 0.5, 0.25, 0.125)
EMBEDDING_RANK_CHOICES = (1.0, 0.5, 0.25, 0.125, 0.0625)
MIN_FACTOR_DIM = 16                          # smaller layers gain nothing from factorising

_SVD_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
_SVD_CACHE_LIMIT = 64


class LowRank(nn.Sequential):
    """Two factors that together replace one layer."""


def _svd(matrix: torch.Tensor):
    """SVD in float64 (stable, reproducible), cached by content: embeddings are costly to redo."""
    data = matrix.detach().contiguous().numpy().tobytes()
    key = hashlib.sha1(data).hexdigest() + str(tuple(matrix.shape))
    if key not in _SVD_CACHE:
        if len(_SVD_CACHE) >= _SVD_CACHE_LIMIT:
            _SVD_CACHE.pop(next(iter(_SVD_CACHE)))
        _SVD_CACHE[key] = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    return _SVD_CACHE[key]


def _factors(matrix: torch.Tensor, rank: int):
    """``matrix ≈ left @ right`` with ``left`` [m, r] and ``right`` [r, n], energy split evenly."""
    u, s, vh = _svd(matrix)
    root = s[:rank].sqrt()
    left = (u[:, :rank] * root).float()
    right = (root[:, None] * vh[:rank]).float()
    return left, right


@torch.no_grad()
def factorize(module: nn.Module, rank: int) -> nn.Module:
    """Return the factorised replacement of a Linear, Conv2d (groups=1) or Embedding."""
    if isinstance(module, nn.Linear):
        left, right = _factors(module.weight, rank)
        first = nn.Linear(module.in_features, rank, bias=False)
        second = nn.Linear(rank, module.out_features, bias=module.bias is not None)
        first.weight.copy_(right)
        second.weight.copy_(left)
        if module.bias is not None:
            second.bias.copy_(module.bias)
        return LowRank(first, second)
    if isinstance(module, nn.Conv2d) and module.groups == 1:
        out_c, in_c, kh, kw = module.weight.shape
        left, right = _factors(module.weight.reshape(out_c, -1), rank)
        first = nn.Conv2d(in_c, rank, (kh, kw), module.stride, module.padding, module.dilation,
                          bias=False, padding_mode=module.padding_mode)
        second = nn.Conv2d(rank, out_c, 1, bias=module.bias is not None)
        first.weight.copy_(right.reshape(rank, in_c, kh, kw))
        second.weight.copy_(left.reshape(out_c, rank, 1, 1))
        if module.bias is not None:
            second.bias.copy_(module.bias)
        return LowRank(first, second)
    if isinstance(module, nn.Embedding):
        left, right = _factors(module.weight, rank)
        first = nn.Embedding(module.num_embeddings, rank, padding_idx=module.padding_idx)
        second = nn.Linear(rank, module.embedding_dim, bias=False)
        first.weight.copy_(left)
        second.weight.copy_(right.T)
        return LowRank(first, second)
    raise TypeError(f"low-rank factorization does not handle {type(module).__name__}")


def full_rank(module: nn.Module) -> int:
    """The rank the ratio knob is a fraction of."""
    if isinstance(module, nn.Linear):
        return min(module.weight.shape)
    if isinstance(module, nn.Conv2d):
        return min(module.out_channels, module.weight[0].numel())
    if isinstance(module, nn.Embedding):
        return min(module.weight.shape)
    raise TypeError(f"low-rank factorization does not handle {type(module).__name__}")


def saves_parameters(module: nn.Module, rank: int) -> bool:
    """Whether the rank-``rank`` factor pair holds fewer parameters than the layer itself."""
    return factor_saves(module.weight.shape[0], module.weight[0].numel(), rank)


def factor_saves(rows: int, cols: int, rank: int) -> bool:
    """Whether a rank-``rank`` factor pair of a rows x cols weight holds fewer parameters."""
    return rank * (rows + cols) < rows * cols


def factor_rank(full_rank: int, ratio: float) -> int:
    """The rank a ratio selects, snapped up to a multiple of 8 so kernels stay regular."""
    rank = max(1, round(full_rank * ratio))
    if rank >= 8:
        rank = min(full_rank, -(-rank // 8) * 8)
    return rank


def useful_ranks(out_dim: int, in_dim: int, kernel: int, choices: tuple) -> tuple:
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


def rank_knobs(model: nn.Module, example_args=(), input_names=()):
    """(knobs, skips): the ranks that save parameters, per Linear, full Conv2d and large
    Embedding."""
    from ..records import MIN_EMBEDDING_ROWS

    knobs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and module.num_embeddings >= MIN_EMBEDDING_ROWS:
            ranks = useful_ranks(module.num_embeddings, module.embedding_dim, 1,
                                 EMBEDDING_RANK_CHOICES)
        elif isinstance(module, nn.Linear):
            ranks = useful_ranks(module.out_features, module.in_features, 1, RANK_CHOICES)
        elif isinstance(module, nn.Conv2d) and module.groups == 1:
            k = module.kernel_size[0] * module.kernel_size[1]
            ranks = useful_ranks(module.out_channels, module.in_channels, k, RANK_CHOICES)
        else:
            continue
        if len(ranks) > 1:
            knobs.append(Knob(name, RANK_RATIO, ranks, "low-rank factorization"))
    return knobs, []


def apply(stage) -> None:
    """Each chosen layer becomes its factor pair (a pruned vocabulary's table inside it)."""
    from .vocab import VocabPruned

    for unit, knobs in sorted(stage.plan.units.items()):
        ratio = float(knobs.get(RANK_RATIO, 1.0))
        if ratio >= 1.0:
            continue
        parent, attr = parent_and_attr(stage.model, unit)
        if isinstance(getattr(parent, attr), VocabPruned):
            parent, attr = getattr(parent, attr), "embed"
        layer = getattr(parent, attr)
        rank = factor_rank(full_rank(layer), ratio)
        if saves_parameters(layer, rank):
            setattr(parent, attr, factorize(layer, rank))
