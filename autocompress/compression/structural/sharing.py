"""Cross-layer parameter sharing: a block reuses the preceding block's weights.

``share=True`` on block N of a container makes block N the same module object as
block N-1, so a run of sharing blocks all use the first block's (already compressed)
weights. The TorchScript exporter writes a parameter used twice as one initializer
(checked by tests/test_sharing.py), so the file really holds the shared tensors once.
Sharing saves storage, not compute.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .depth import block_signatures
from ..records import Knob, Skip
from ..plan import SHARE

TECHNIQUE = "parameter sharing"


def predecessor(unit: str) -> str | None:
    """``layers.3`` -> ``layers.2``; None for the first block of a container."""
    parent, _, index = unit.rpartition(".")
    if not index.isdigit() or int(index) == 0:
        return None
    return f"{parent}.{int(index) - 1}" if parent else str(int(index) - 1)


def _structure(module: nn.Module) -> tuple:
    return type(module), repr(module), tuple((n, tuple(p.shape)) for n, p in module.named_parameters())


def share_knobs(model: nn.Module, example_args: Sequence,
                input_names=()) -> tuple[list[Knob], list[Skip]]:
    signatures = block_signatures(model, example_args)
    modules = dict(model.named_modules())
    knobs, skips = [], []
    for name, signature in signatures.items():
        prev = predecessor(name)
        if prev is None:
            continue
        if prev not in signatures or signatures[prev] != signature or signature[0] != signature[1]:
            reason = f"input/output shapes differ from {prev!r}"
        elif _structure(modules[prev]) != _structure(modules[name]):
            reason = f"structure differs from {prev!r}"
        elif any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules[name].modules()):
            reason = "block holds BatchNorm (folding it into a conv used twice would fold twice)"
        else:
            knobs.append(Knob(name, SHARE, (False, True), TECHNIQUE))
            continue
        skips.append(Skip(name, TECHNIQUE, reason))
    return knobs, skips


def share_blocks(model: nn.Module, units: Sequence[str], example_args: Sequence) -> list[str]:
    """Make each unit reuse its predecessor's module, in block order; returns those shared.

    Checked on the model as it is now: a pair whose input/output shapes differ by now
    (earlier steps pruned channels between them) keeps its own weights.
    """
    signatures = block_signatures(model, example_args)
    done = []
    for unit in sorted(units, key=_order):
        prev = predecessor(unit)
        if signatures.get(unit) is None or signatures.get(unit) != signatures.get(prev):
            continue
        parent_name, _, attr = unit.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, model.get_submodule(prev))
        done.append(unit)
    return done


def _order(unit: str) -> tuple:
    parent, _, index = unit.rpartition(".")
    return parent, int(index)



def apply(stage) -> None:
    sharers = [u for u, k in stage.plan.units.items() if k.get(SHARE) is True]
    if sharers:
        share_blocks(stage.model, sharers, stage.args)
