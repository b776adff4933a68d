"""Module replacing: a block swapped for a compact substitute trained by local distillation.

* FFN (``fc1``/``fc2`` module) -> the same FFN narrowed to a fraction of its hidden width
  ("ffn:0.5"), initialised from the neurons with the largest fc1-row x fc2-column norm;
* k x k conv -> depthwise-separable conv ("dwsep"): k x k depthwise then 1x1 pointwise,
  initialised from the best rank-1 split of each input channel's kernel stack (SVD).

Each substitute then learns to match the original block's outputs on the block's own
inputs, recorded from one pass over the calibration batches (never the evaluation set),
for a fixed number of seeded Adam steps in a fixed order.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from .. import fidelity
from .decompose import MIN_SAVED_PER_LAYER
from ..training.distill import deterministic
from ..records import Knob, Skip
from ..plan import REPLACE
from .pruning import NEURON_ROUND_TO, _round_keep, ffn_units, prune_neurons

TECHNIQUE = "module replacing"
FFN_CHOICES = ("none", "ffn:0.5", "ffn:0.25")
LOCAL_STEPS = 100
LOCAL_LR = 1e-3
ROWS_PER_STEP = 512
SEED = 0


class Separable(nn.Sequential):
    """Depthwise k x k then pointwise 1x1: the substitute of one conv."""


def replace_knobs(model: nn.Module, example_args=(),
                  input_names=()) -> tuple[list[Knob], list[Skip]]:
    knobs, skips = [], []
    for name in ffn_units(model):
        if name == "":     # the whole model is not a block to swap (and "" names model-wide knobs)
            skips.append(Skip("", TECHNIQUE, "the model itself is an fc1/fc2 pair, not a "
                              "replaceable block inside it"))
            continue
        width = model.get_submodule(name).fc1.out_features
        keep = [c for c in FFN_CHOICES[1:] if narrowed_width(width, c) < width]
        if keep:
            knobs.append(Knob(name, REPLACE, ("none", *keep), TECHNIQUE))
        else:
            skips.append(Skip(name, TECHNIQUE, f"FFN width {width} is too narrow to narrow"))
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            reason = _dwsep_unsuitable(conv)
            if reason is None:
                knobs.append(Knob(name, REPLACE, ("none", "dwsep"), TECHNIQUE))
            elif conv.kernel_size != (1, 1) and conv.groups == 1:
                skips.append(Skip(name, TECHNIQUE, reason))
    return knobs, skips


def narrowed_width(width: int, choice: str) -> int:
    return _round_keep(width * float(choice.partition(":")[2]), width, NEURON_ROUND_TO)


def _dwsep_unsuitable(conv: nn.Conv2d) -> str | None:
    if conv.groups != 1 or conv.kernel_size == (1, 1):
        return "not a full k x k conv"
    if conv.padding_mode != "zeros":
        return "non-zero padding mode"
    kh, kw = conv.kernel_size
    own = conv.out_channels * conv.in_channels * kh * kw
    if own - conv.in_channels * (kh * kw + conv.out_channels) < MIN_SAVED_PER_LAYER:
        return (f"depthwise-separable form saves fewer than {MIN_SAVED_PER_LAYER} parameters "
                "(the file would not shrink)")
    return None


@torch.no_grad()
def substitute(module: nn.Module, choice: str) -> nn.Module:
    """The initialised substitute for ``module`` (before local distillation)."""
    if choice == "dwsep":
        return _dwsep_from(module)
    new = copy.deepcopy(module)
    width = module.fc1.out_features
    prune_neurons(new, 1.0 - narrowed_width(width, choice) / width)
    return new


def _dwsep_from(conv: nn.Conv2d) -> Separable:
    o, i, kh, kw = conv.weight.shape
    depthwise = nn.Conv2d(i, i, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                          groups=i, bias=False)
    pointwise = nn.Conv2d(i, o, 1, bias=conv.bias is not None)
    per_input = conv.weight.detach().double().permute(1, 0, 2, 3).reshape(i, o, kh * kw)
    u, s, vh = torch.linalg.svd(per_input, full_matrices=False)   # batched over input channels
    root = s[:, 0].sqrt()
    depthwise.weight.copy_((root[:, None] * vh[:, 0]).reshape(i, 1, kh, kw).float())
    pointwise.weight.copy_((u[:, :, 0] * root[:, None]).T.reshape(o, i, 1, 1).float())
    if conv.bias is not None:
        pointwise.bias.copy_(conv.bias)
    return Separable(depthwise, pointwise)


def record_inputs(model: nn.Module, units: Sequence[str], batches: Sequence[Sequence[torch.Tensor]]
                  ) -> dict[str, list[torch.Tensor]]:
    """The first input of each unit on every calibration batch, in one pass."""
    seen: dict[str, list[torch.Tensor]] = {u: [] for u in units}
    handles = [model.get_submodule(u).register_forward_hook(
        lambda m, inputs, out, u=u: seen[u].append(inputs[0].detach())) for u in units]
    try:
        with torch.no_grad():
            for args in batches:
                model(*args)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def fit_locally(new: nn.Module, old: nn.Module, inputs: Sequence[torch.Tensor],
                steps: int = LOCAL_STEPS) -> list[float]:
    """Train ``new`` to reproduce ``old`` on ``inputs`` (MSE); returns the loss per step."""
    with torch.no_grad():
        if inputs[0].dim() == 3:   # token sequences: position-wise block, train on rows
            inputs = [torch.cat([x.reshape(-1, x.shape[-1]) for x in inputs])]
        xs = torch.cat(list(inputs))
        ys = torch.cat([old(x) for x in xs.split(ROWS_PER_STEP)])
    gen = torch.Generator().manual_seed(SEED)
    order = torch.randperm(len(xs), generator=gen)
    batch = min(ROWS_PER_STEP, len(xs))
    losses = []
    new.train(False)
    with deterministic(), torch.enable_grad():
        opt = torch.optim.Adam(new.parameters(), lr=LOCAL_LR)
        for step in range(steps):
            idx = order[(step * batch + torch.arange(batch)) % len(xs)]
            loss = nn.functional.mse_loss(new(xs[idx]), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    for p in new.parameters():
        p.grad = None
    return losses


def replace_modules(model: nn.Module, choices: dict[str, str], batches, steps: int = LOCAL_STEPS
                    ) -> None:
    """Swap each unit for its substitute, trained on inputs recorded before any swap."""
    units = sorted(choices)
    for unit in units:
        _check(model.get_submodule(unit), choices[unit], unit)
    inputs = record_inputs(model, units, batches)
    for unit in units:
        old = model.get_submodule(unit)
        new = substitute(old, choices[unit])
        fit_locally(new, old, inputs[unit], fidelity.steps(steps))
        parent_name, _, attr = unit.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def _check(module: nn.Module, choice: str, unit: str) -> None:
    if choice == "dwsep":
        ok = isinstance(module, nn.Conv2d) and module.groups == 1 and module.kernel_size != (1, 1)
        what = "a full k x k Conv2d"
    else:
        ok = choice.startswith("ffn:") and "" in ffn_units(module)   # the module itself is one
        what = "an FFN module (fc1/fc2)"
    if not ok:
        raise ValueError(f"module replacing {choice!r} needs {what}; {unit!r} is not")


def apply(stage) -> None:
    """Chosen modules replaced and fitted to the originals' outputs on calibration batches."""
    choices = {u: k[REPLACE] for u, k in stage.plan.units.items()
               if k.get(REPLACE, "none") != "none"}
    if choices:
        batches = [tuple(torch.from_numpy(b[n]) for n in stage.workload.input_names)
                   for b in stage.workload.calibration]
        replace_modules(stage.model, choices, batches)
