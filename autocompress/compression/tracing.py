"""One forward pass with hooks: how techniques learn what a model does with its inputs."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn


def trace_calls(model: nn.Module, example_args: Sequence, types: tuple,
                on_call: Callable[[str, nn.Module, tuple], None]) -> None:
    """Run ``model(*example_args)`` once, calling ``on_call(name, module, inputs)`` for every
    module of ``types`` in execution order; hooks are always removed."""
    hooks = [module.register_forward_hook(lambda mod, inputs, out, name=name: on_call(name, mod, inputs))
             for name, module in model.named_modules() if isinstance(module, types)]
    try:
        with torch.no_grad():
            model(*example_args)
    finally:
        for hook in hooks:
            hook.remove()
