"""Which plan unit each ONNX weight initializer holds: matched by content, since the
exporter renames and transposes weights."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from torch import nn

from .records import fingerprint
from .structural import decompose, lowrank, replace, vocab
from .weights.quantize import weight_initializers


def match_initializers(proto: onnx.ModelProto, model: nn.Module) -> dict[str, str]:
    """Map ONNX weight initializers to plan units by content (the exporter renames and transposes)."""
    by_content: dict[str, str] = {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
            continue
        unit = _unit_of(model, name)
        weight = module.weight.detach().numpy()
        by_content[fingerprint(weight)] = unit
        if weight.ndim == 2:
            by_content[fingerprint(np.ascontiguousarray(weight.T))] = unit
    inits = {i.name: i for i in proto.graph.initializer}
    matched = {}
    for name in weight_initializers(proto):
        unit = by_content.get(fingerprint(numpy_helper.to_array(inits[name])))
        if unit is not None:
            matched[name] = unit
    return matched


_WRAPPERS = (lowrank.LowRank, vocab.VocabPruned, decompose.Decomposed, replace.Separable)


def _unit_of(model: nn.Module, name: str) -> str:
    """The plan unit a module belongs to: wrappers (low-rank pair, pruned vocabulary) answer for their parts."""
    while "." in name:
        parent = name.rpartition(".")[0]
        if not isinstance(model.get_submodule(parent), _WRAPPERS):
            break
        name = parent
    return name
