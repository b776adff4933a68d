"""Precedence between the structural techniques, so that every plan the space proposes applies.

Order of the torch stage (``registry.TORCH_STAGE``, run by ``apply.compress_torch``):
    vocab -> pruning -> drop blocks -> share blocks -> fold BN -> low-rank
    -> decompose convs -> replace modules -> distillation (last: recovery after everything)

Precedence, so that every plan the space can propose applies (resolved by :func:`resolve`):
1. A dropped block's units lose their low-rank / decomposition / replacing / sharing knobs
   (the block is gone before those steps). Pruning runs before the drop, so a channel group
   rooted inside it still shrinks the layers it couples outside it.
2. A block sharing its predecessor's weights loses the structural knobs of its own units
   (pruning, low-rank, decomposition, replacing): its own tensors are discarded. Sharing
   with a dropped predecessor, or from a dropped block, is ignored.
3. On one unit, module replacing wins over decomposition, which wins over low-rank.
   A replaced FFN also loses its pruning and its inner layers' low-rank / decomposition.
4. An early exit (``exit_after``) wins over dropping and sharing the blocks of its container:
   the exit cuts the graph between blocks, so each must keep its own nodes.
Quantization knobs are never touched: they follow whatever tensors remain.
"""
from __future__ import annotations

from torch import nn

from . import sharing
from ..plan import DECOMP, DROP, EXIT_AFTER, PRUNE_RATIO, RANK_RATIO, REPLACE, SHARE, Plan

SHARER_LOSES = (PRUNE_RATIO, RANK_RATIO, DECOMP, REPLACE, SHARE)
"""Knobs on the units inside a block that shares its predecessor's weights: its own
tensors are discarded, so they would change nothing (rule 2 below)."""


def _inside(unit: str, blocks: set[str]) -> bool:
    return any(unit == b or unit.startswith(b + ".") for b in blocks)


def resolve(plan: Plan) -> Plan:
    """The plan with overridden knobs removed (precedence rules in the module docstring)."""
    plan = _exit_keeps_blocks(plan)
    dropped = {u for u, k in plan.units.items() if k.get(DROP) is True}
    sharers = {u for u, k in plan.units.items() if k.get(SHARE) is True and u not in dropped
               and sharing.predecessor(u) not in dropped}
    replaced = {u for u, k in plan.units.items() if k.get(REPLACE, "none") != "none"}
    units = {}
    for unit, knobs in plan.units.items():
        knobs = dict(knobs)
        if _inside(unit, dropped):
            _remove(knobs, RANK_RATIO, DECOMP, REPLACE, SHARE)
        if unit not in sharers:
            knobs.pop(SHARE, None)
        if any(unit.startswith(s + ".") for s in sharers):
            _remove(knobs, *SHARER_LOSES)
        if any(unit.startswith(r + ".") for r in replaced):
            _remove(knobs, RANK_RATIO, DECOMP, REPLACE)
        if knobs.get(REPLACE, "none") != "none":
            _remove(knobs, DECOMP, RANK_RATIO, PRUNE_RATIO)
        elif knobs.get(DECOMP, "none") != "none":
            knobs.pop(RANK_RATIO, None)
        if knobs:
            units[unit] = knobs
    return Plan(units)


def coherent(plan: Plan, contained: frozenset = frozenset()) -> Plan:
    """:func:`resolve`, and no knob at all on the insides of a dropped block (their tensors
    are gone, so a weight format or a pruning ratio there would change nothing): the plan a
    search stores and shows is then exactly the one applied, knob for knob. Pruning groups
    rooted inside a dropped block that also shrink layers outside it keep their ratio
    (pruning runs before the drop); ``contained`` names the units whose pruning acts only
    inside their block (attention heads, FFN neurons: :func:`contained_units`)."""
    from ..registry import WEIGHT_KNOBS

    plan = resolve(plan)
    dropped = {u for u, k in plan.units.items() if k.get(DROP) is True}
    if not dropped:
        return plan
    units = {}
    for unit, knobs in plan.units.items():
        knobs = dict(knobs)
        if unit not in dropped and _inside(unit, dropped):
            _remove(knobs, *WEIGHT_KNOBS)
            if unit in contained:
                knobs.pop(PRUNE_RATIO, None)
        if knobs:
            units[unit] = knobs
    return Plan(units)


def contained_units(model: nn.Module) -> frozenset:
    """Units whose pruning (heads, FFN neurons) changes nothing outside their module."""
    from . import pruning

    return frozenset(pruning.attention_units(model)) | frozenset(pruning.ffn_units(model))


def _exit_keeps_blocks(plan: Plan) -> Plan:
    containers = {str(k[EXIT_AFTER]).rpartition(".")[0] for k in plan.units.values()
                  if k.get(EXIT_AFTER, "none") != "none"}
    if not containers:
        return plan
    units = {}
    for unit, knobs in plan.units.items():
        knobs = dict(knobs)
        if unit.rpartition(".")[0] in containers:
            _remove(knobs, DROP, SHARE)
        units[unit] = knobs
    return Plan(units)


def _remove(knobs: dict, *names: str) -> None:
    for name in names:
        knobs.pop(name, None)
