"""Structured pruning that physically shrinks tensors.

Transformers: attention heads (Q/K/V rows and O columns of one head together) and
FFN neurons (fc1 rows with fc2 columns), recognised by module shape, not by class.
Other networks (CNNs, MLPs): channel groups from Torch-Pruning's dependency graph,
which keeps residual adds, depthwise convs and BatchNorms consistent.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from ..plan import PRUNE_RATIO
from ..records import Knob
from ..tracing import trace_calls

PRUNE_CHOICES = (0.0, 0.25, 0.5, 0.75)
CHANNEL_ROUND_TO = 4   # kept channel counts are multiples of this (regular kernels)
NEURON_ROUND_TO = 8


def _is_linear(module) -> bool:
    return isinstance(module, nn.Linear)


def attention_units(model: nn.Module) -> list[str]:
    """Modules with ``q``, ``k``, ``v``, ``o`` linears and ``num_heads``/``head_dim``."""
    return [name for name, m in model.named_modules()
            if all(_is_linear(getattr(m, a, None)) for a in "qkvo")
            and isinstance(getattr(m, "num_heads", None), int) and hasattr(m, "head_dim")]


def ffn_units(model: nn.Module) -> list[str]:
    """Modules with ``fc1``/``fc2`` linears whose inner widths agree."""
    return [name for name, m in model.named_modules()
            if _is_linear(getattr(m, "fc1", None)) and _is_linear(getattr(m, "fc2", None))
            and m.fc1.out_features == m.fc2.in_features]


@torch.no_grad()
def prune_heads(attn: nn.Module, ratio: float) -> None:
    """Remove ``round(ratio * num_heads)`` heads with the smallest weight norm (at least one stays)."""
    n_heads, dim = attn.num_heads, attn.head_dim
    n_keep = max(1, n_heads - round(ratio * n_heads))
    if n_keep == n_heads:
        return
    norms = sum(getattr(attn, a).weight.view(n_heads, dim, -1).pow(2).sum((1, 2)) for a in "qkv")
    norms = norms + attn.o.weight.view(-1, n_heads, dim).pow(2).sum((0, 2))
    heads = torch.sort(torch.argsort(norms, descending=True)[:n_keep]).values
    rows = (heads[:, None] * dim + torch.arange(dim)).reshape(-1)
    for a in "qkv":
        setattr(attn, a, _slice_linear(getattr(attn, a), rows=rows))
    attn.o = _slice_linear(attn.o, cols=rows)
    attn.num_heads = n_keep


@torch.no_grad()
def prune_neurons(ffn: nn.Module, ratio: float) -> None:
    """Remove the FFN's inner neurons with the smallest fc1-row x fc2-column norm."""
    width = ffn.fc1.out_features
    n_keep = _round_keep(width * (1 - ratio), width, NEURON_ROUND_TO)
    if n_keep == width:
        return
    score = ffn.fc1.weight.norm(dim=1) * ffn.fc2.weight.norm(dim=0)
    keep = torch.sort(torch.argsort(score, descending=True)[:n_keep]).values
    ffn.fc1 = _slice_linear(ffn.fc1, rows=keep)
    ffn.fc2 = _slice_linear(ffn.fc2, cols=keep)


def _round_keep(target: float, width: int, multiple: int) -> int:
    keep = max(multiple, int(round(target / multiple)) * multiple)
    return min(width, keep)


def _slice_linear(layer: nn.Linear, rows=None, cols=None) -> nn.Linear:
    weight = layer.weight
    bias = layer.bias
    if rows is not None:
        weight, bias = weight[rows], (bias[rows] if bias is not None else None)
    if cols is not None:
        weight = weight[:, cols]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    new.weight.copy_(weight)
    if bias is not None:
        new.bias.copy_(bias)
    return new


# ---- generic networks: Torch-Pruning dependency groups -------------------------------------

def _output_layers(model: nn.Module, example_args: Sequence) -> list[nn.Module]:
    """The last Conv/Linear to run: its outputs are the model's, so its width is fixed."""
    order: list[nn.Module] = []
    trace_calls(model, example_args, (nn.Conv2d, nn.Linear),
                lambda name, module, inputs: order.append(module))
    return order[-1:]


def _dependency_graph(model: nn.Module, example_args: Sequence):
    import torch_pruning as tp

    return tp.DependencyGraph().build_dependency(model, example_inputs=tuple(example_args))


def group_units(model: nn.Module, example_args: Sequence) -> list[str]:
    """Names of the root layers of prunable channel groups (output layer excluded)."""
    names = {m: n for n, m in model.named_modules()}
    graph = _dependency_graph(model, example_args)
    ignored = _output_layers(model, example_args)
    groups = graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear))
    roots = [names[g[0].dep.target.module] for g in groups]
    return sorted(set(roots), key=list(names.values()).index)


def prune_groups(model: nn.Module, example_args: Sequence, ratios: Mapping[str, float]) -> None:
    """Prune each named group's channels by its ratio (L2 magnitude importance)."""
    import torch_pruning as tp

    modules = dict(model.named_modules())
    ratio_dict = {modules[name]: r for name, r in ratios.items() if r > 0}
    if not ratio_dict:
        return
    pruner = tp.pruner.MetaPruner(
        model, tuple(example_args), importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.0, pruning_ratio_dict=ratio_dict,
        ignored_layers=_output_layers(model, example_args), round_to=CHANNEL_ROUND_TO)
    pruner.step()


def prune_knobs(model: nn.Module, example_args: Sequence, input_names: Sequence[str] = ()):
    """(knobs, skips): a ratio per attention block and FFN, or else per channel group."""
    units = [(n, "attention heads") for n in attention_units(model)]
    units += [(n, "ffn neurons") for n in ffn_units(model)]
    if not units:
        units = [(n, "channels") for n in group_units(model, example_args)]
    return [Knob(name, PRUNE_RATIO, PRUNE_CHOICES, f"structured pruning ({what})")
            for name, what in units], []


def apply(stage) -> None:
    """Heads and FFN neurons per module; channel groups all at once (one dependency graph)."""
    model = stage.model
    modules = dict(model.named_modules())
    heads, ffns = set(attention_units(model)), set(ffn_units(model))
    groups = {}
    for unit, knobs in stage.plan.units.items():
        ratio = float(knobs.get(PRUNE_RATIO, 0.0))
        if ratio <= 0:
            continue
        if unit in heads:
            prune_heads(modules[unit], ratio)
        elif unit in ffns:
            prune_neurons(modules[unit], ratio)
        else:
            groups[unit] = ratio
    if groups:
        prune_groups(model, stage.args, groups)
