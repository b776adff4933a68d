"""Blocks: the repeated units of a model (transformer layers, residual blocks), which depth
pruning removes and recovery holds to the teacher's (``training/block_targets.py``).

A block is a child of an ``nn.ModuleList`` / ``nn.Sequential`` that has children and
weights of its own; one rule for both, so the blocks recovery matches are exactly the
blocks depth pruning may drop.
"""
from __future__ import annotations

from torch import nn


class Dropped(nn.Module):
    """What remains of a removed block: its first input passes through unchanged."""

    def forward(self, x, *args, **kwargs):
        return x


def candidate_blocks(model: nn.Module) -> list[str]:
    """Children of ModuleList/Sequential containers that are blocks (have children and weights)."""
    out = []
    for name, container in model.named_modules():
        if not isinstance(container, (nn.ModuleList, nn.Sequential)):
            continue
        for child_name, child in container.named_children():
            if any(True for _ in child.children()) and any(True for _ in child.parameters()):
                out.append(f"{name}.{child_name}" if name else child_name)
    return out
