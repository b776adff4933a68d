"""A technique written the way ARCHITECTURE.md's recipe says, to prove the recipe: one module
with ``offer`` and ``apply``, registered by one ``Technique`` line (tests/test_registry.py).

Bias removal: a Linear layer's bias is dropped (its outputs lose a constant shift).
"""
from torch import nn

from autocompress.compression.records import Knob, Skip

TECHNIQUE = "bias removal"
KNOB = "drop_bias"


def offer(model: nn.Module, example_args=(), input_names=()):
    knobs, skips = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            if module.bias is None:
                skips.append(Skip(name, TECHNIQUE, "the layer has no bias"))
            else:
                knobs.append(Knob(name, KNOB, (False, True), TECHNIQUE))
    return knobs, skips


def apply(stage) -> None:
    for unit, knobs in sorted(stage.plan.units.items()):
        if knobs.get(KNOB) is True:
            stage.model.get_submodule(unit).bias = None
