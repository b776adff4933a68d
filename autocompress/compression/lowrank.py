"""Low-rank factorization (truncated SVD): one layer becomes two thinner ones.

Linear W[out,in] -> Linear(in->r) then Linear(r->out); Conv k x k -> Conv k x k (in->r)
then 1x1 (r->out); Embedding V x D -> Embedding V x r then Linear(r->D).
The factor pair is a :class:`LowRank` so later passes know both halves belong to one unit.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

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
    from .knobs import factor_saves

    return factor_saves(module.weight.shape[0], module.weight[0].numel(), rank)
