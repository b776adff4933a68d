"""Depth pruning: remove whole blocks (transformer layers, residual blocks).

A block qualifies when it sits in an ``nn.ModuleList`` / ``nn.Sequential``, holds
parameters, and its output has the shape of its first input, so skipping it is an
identity on the data path (a residual block without its branch; a post-norm
transformer layer passing its input on). A dropped block becomes :class:`Dropped`,
a parameter-free module returning its first argument: names of the other blocks stay
stable for the later, name-addressed steps, and the tensors are really gone.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..blocks import Dropped, candidate_blocks
from ..records import Knob, Skip
from ..plan import DROP, Plan

TECHNIQUE = "depth pruning"


def block_signatures(model: nn.Module, example_args: Sequence) -> dict[str, tuple]:
    """Container-held blocks with parameters -> (input shape, output shape) from one forward pass.

    Blocks that receive or return something other than a tensor first are left out.
    """
    names = candidate_blocks(model)
    found: dict[str, tuple] = {}

    def hook(module, inputs, output, name):
        if inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
            found.setdefault(name, (tuple(inputs[0].shape), tuple(output.shape)))

    modules = dict(model.named_modules(remove_duplicate=False))   # shared blocks keep both names
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: hook(m, i, o, n)) for n in names]
    try:
        with torch.no_grad():
            model(*example_args)
    finally:
        for handle in handles:
            handle.remove()
    return {n: found[n] for n in names if n in found}


def drop_knobs(model: nn.Module, example_args: Sequence,
               input_names=()) -> tuple[list[Knob], list[Skip]]:
    knobs, skips = [], []
    for name, (shape_in, shape_out) in block_signatures(model, example_args).items():
        if shape_in == shape_out:
            knobs.append(Knob(name, DROP, (False, True), TECHNIQUE))
        else:
            skips.append(Skip(name, TECHNIQUE, f"output shape {list(shape_out)} differs from "
                                               f"input shape {list(shape_in)}: not identity-skippable"))
    return knobs, skips


def dropped_units(plan: Plan) -> list[str]:
    return sorted(u for u, k in plan.units.items() if k.get(DROP) is True)


def drop_blocks(model: nn.Module, units: Sequence[str]) -> None:
    """Replace each named block by :class:`Dropped` (its parameters leave the model)."""
    for unit in units:
        parent_name, _, attr = unit.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, Dropped())


def apply(stage) -> None:
    drop_blocks(stage.model, dropped_units(stage.plan))
