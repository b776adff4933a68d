"""Tensor decomposition of k x k convolutions (TensorLy): Tucker-2 and CP.

Tucker-2 (ranks R_o, R_i on the output/input channel modes):
    1x1 (I -> R_i)  ->  k x k core (R_i -> R_o)  ->  1x1 (R_o -> O, + bias)
CP (rank R):
    1x1 (I -> R)  ->  kh x 1 depthwise  ->  1 x kw depthwise  ->  1x1 (R -> O, + bias)
Choices are "tucker:<ratio>" / "cp:<ratio>"; ranks are ``factor_rank`` of the channel
counts. A choice is offered only where the decomposed form holds fewer parameters.
Deterministic: SVD initialisation, fixed ``random_state``, float64, one BLAS thread.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from .lowrank import factor_rank
from ..records import Knob, PlanError, Skip, parent_and_attr
from ..plan import DECOMP

TECHNIQUE = "tensor decomposition"
DECOMP_CHOICES = ("none", "tucker:0.5", "tucker:0.25", "cp:0.5", "cp:0.25")
CP_ITERATIONS = 100
MIN_SAVED_PER_LAYER = 256
"""Parameters each added layer must save: below this the graph overhead of the extra node
(names, shapes) outweighs the smaller tensors and the file grows."""
SEED = 0


class Decomposed(nn.Sequential):
    """The small convs that together replace one conv."""


def parse(choice: str) -> tuple[str, float]:
    kind, _, ratio = choice.partition(":")
    return kind, float(ratio)


def ranks(conv: nn.Conv2d, choice: str) -> tuple[int, ...]:
    """(R_o, R_i) for Tucker-2, (R,) for CP."""
    kind, ratio = parse(choice)
    if kind == "tucker":
        return factor_rank(conv.out_channels, ratio), factor_rank(conv.in_channels, ratio)
    return (factor_rank(max(conv.out_channels, conv.in_channels), ratio),)


def decomposed_params(conv: nn.Conv2d, choice: str) -> int:
    kh, kw = conv.kernel_size
    o, i = conv.out_channels, conv.in_channels
    bias = o if conv.bias is not None else 0
    if parse(choice)[0] == "tucker":
        r_o, r_i = ranks(conv, choice)
        return i * r_i + r_i * r_o * kh * kw + r_o * o + bias
    (r,) = ranks(conv, choice)
    return r * (i + kh + kw + o) + bias


def saves_enough(conv: nn.Conv2d, choice: str) -> bool:
    own = conv.weight.numel() + (conv.out_channels if conv.bias is not None else 0)
    added = 2 if parse(choice)[0] == "tucker" else 3
    return own - decomposed_params(conv, choice) >= MIN_SAVED_PER_LAYER * added


def unsuitable(conv: nn.Conv2d) -> str | None:
    """Why a conv cannot be decomposed, or None."""
    if conv.groups != 1:
        return "grouped/depthwise conv"
    if conv.kernel_size == (1, 1):
        return "1x1 conv: decomposition equals low-rank (rank_ratio)"
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return "non-zero or string padding"
    return None


def decomp_knobs(model: nn.Module, example_args=(),
                 input_names=()) -> tuple[list[Knob], list[Skip]]:
    """(knobs, skips): the Tucker-2 / CP choices that save parameters, per full k x k conv."""
    knobs, skips = [], []
    for name, conv in model.named_modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        reason = unsuitable(conv)
        if reason is None:
            keep = [c for c in DECOMP_CHOICES[1:] if saves_enough(conv, c)]
            if keep:
                knobs.append(Knob(name, DECOMP, ("none", *keep), TECHNIQUE))
                continue
            reason = (f"no Tucker-2 or CP rank saves {MIN_SAVED_PER_LAYER} parameters per added "
                      "layer (the file would not shrink)")
        skips.append(Skip(name, TECHNIQUE, reason))
    return knobs, skips


@torch.no_grad()
def decompose(conv: nn.Conv2d, choice: str) -> Decomposed:
    """The decomposed replacement of ``conv`` for a "tucker:R" / "cp:R" choice."""
    weight = conv.weight.detach().double().numpy()
    from threadpoolctl import threadpool_limits   # ships with scikit-learn

    # one BLAS thread: the same bytes on every machine, and no stall on a busy host
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")   # TensorLy warns when a rank exceeds a mode size
        if parse(choice)[0] == "tucker":
            layers = _tucker_layers(conv, weight, ranks(conv, choice))
        else:
            layers = _cp_layers(conv, weight, ranks(conv, choice)[0])
    return Decomposed(*layers)


def _tucker_layers(conv: nn.Conv2d, weight: np.ndarray, rank: tuple[int, int]) -> list[nn.Conv2d]:
    from tensorly.decomposition import partial_tucker

    (core, (u_out, u_in)), _ = partial_tucker(weight, rank=list(rank), modes=[0, 1], init="svd",
                                              random_state=SEED)
    r_o, r_i = core.shape[:2]
    first = nn.Conv2d(conv.in_channels, r_i, 1, bias=False)
    middle = nn.Conv2d(r_i, r_o, conv.kernel_size, conv.stride, conv.padding, conv.dilation, bias=False)
    last = nn.Conv2d(r_o, conv.out_channels, 1, bias=conv.bias is not None)
    _set(first, u_in.T[:, :, None, None])
    _set(middle, core)
    _set(last, u_out[:, :, None, None])
    if conv.bias is not None:
        last.bias.copy_(conv.bias)
    return [first, middle, last]


def _cp_layers(conv: nn.Conv2d, weight: np.ndarray, rank: int) -> list[nn.Conv2d]:
    from tensorly.decomposition import parafac

    cp = parafac(weight, rank=rank, init="svd", random_state=SEED, n_iter_max=CP_ITERATIONS,
                 tol=1e-7)
    a_out, b_in, c_h, d_w = cp.factors
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    (ph, pw), (dh, dw) = conv.padding, conv.dilation
    first = nn.Conv2d(conv.in_channels, rank, 1, bias=False)
    vertical = nn.Conv2d(rank, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), groups=rank, bias=False)
    horizontal = nn.Conv2d(rank, rank, (1, kw), (1, sw), (0, pw), (1, dw), groups=rank, bias=False)
    last = nn.Conv2d(rank, conv.out_channels, 1, bias=conv.bias is not None)
    _set(first, b_in.T[:, :, None, None])
    _set(vertical, c_h.T[:, None, :, None])
    _set(horizontal, d_w.T[:, None, None, :])
    _set(last, (a_out * cp.weights)[:, :, None, None])
    if conv.bias is not None:
        last.bias.copy_(conv.bias)
    return [first, vertical, horizontal, last]


def _set(layer: nn.Conv2d, value: np.ndarray) -> None:
    layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(value)).float())


def apply(stage) -> None:
    """Each chosen conv becomes its decomposition (after low-rank, which it wins over)."""
    for unit, knobs in sorted(stage.plan.units.items()):
        choice = knobs.get(DECOMP, "none")
        if choice != "none":
            parent, attr = parent_and_attr(stage.model, unit)
            layer = getattr(parent, attr)
            if not isinstance(layer, nn.Conv2d) or unsuitable(layer):
                raise PlanError(f"tensor decomposition needs a full k x k Conv2d; {unit!r} is not")
            setattr(parent, attr, decompose(layer, choice))
