"""Block-wise targets for recovery: each repeated block of the student matches the same
block of the teacher, not just the final output.

Every block is told what its output should be, as TinyBERT / CoFi-style layer distillation
does: the final output alone is one pooled vector per sample, the blocks' outputs are every
token's hidden state at every depth (MiniLM, 300 steps: +0.005 cosine on a width-pruned and
on a depth-pruned plan; ``finalize.BLOCK_WEIGHT``). Which blocks: the teacher's blocks
(:mod:`..blocks`, the rule depth pruning uses) whose student namesake is still a block of
its own (not dropped, not shared with another name) and returns a tensor of the teacher's
shape. Models without blocks (a plain CNN, a converted ONNX graph) get no extra term.

The term is each block's relative squared error ``|s - t|^2 / |t|^2``, averaged over the
blocks: scale-free, so one weight serves hidden states of any magnitude.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from ..blocks import Dropped, candidate_blocks


def matched_blocks(teacher: nn.Module, student: nn.Module, example_args: Sequence) -> list[str]:
    """Names of the blocks whose student output can be held to the teacher's."""
    names = candidate_blocks(teacher)
    if not names:
        return []
    students = _distinct_blocks(student, names)
    if not students:
        return []
    with torch.no_grad(), capture(teacher, students) as want, capture(student, students) as got:
        teacher(*example_args)
        student(*example_args)
    return [n for n in students if n in want and n in got and want[n].shape == got[n].shape]


def _distinct_blocks(model: nn.Module, names: list[str]) -> list[str]:
    """``names`` that are a block of ``model`` of their own: present, not :class:`Dropped`
    and not the same module object as another name (a shared block runs once per name)."""
    modules = dict(model.named_modules(remove_duplicate=False))
    owners: dict[int, list[str]] = {}
    for name in names:
        module = modules.get(name)
        if module is not None and not isinstance(module, Dropped):
            owners.setdefault(id(module), []).append(name)
    return [group[0] for group in owners.values() if len(group) == 1]


@contextlib.contextmanager
def capture(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, ``model``'s forward passes record each named block's tensor output
    (the last pass wins)."""
    outputs: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules(remove_duplicate=False))

    def keep(name):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor):
                outputs[name] = output
        return hook

    handles = [modules[n].register_forward_hook(keep(n)) for n in names if n in modules]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def block_loss(student_outputs: dict, teacher_outputs: dict) -> torch.Tensor:
    """Mean over the blocks of ``|s - t|^2 / |t|^2``."""
    terms = [(student_outputs[n] - t).pow(2).sum() / t.pow(2).sum().clamp(min=1e-12)
             for n, t in teacher_outputs.items() if n in student_outputs]
    return torch.stack(terms).mean()
