"""Knobs of the ONNX-side weight techniques: quantization bit width, magnitude sparsity,
clustering per layer, and the model-wide activation calibration method.

Every offered combination applies (see :mod:`.weight_storage` for how they compose);
what is not offered comes back as a :class:`~.records.Skip` naming the layer and why.
"""
from __future__ import annotations

from dataclasses import replace
from math import prod
from typing import Mapping, Sequence

from .calibration import CALIBRATION_METHODS
from .clustering import CLUSTER_CHOICES
from ..plan import CALIBRATION, CLUSTERS, QUANT, SPARSITY, WHOLE_MODEL
from ..records import Knob, Skip
from .sparsity import SPARSITY_CHOICES
from .storage import DYNAMIC_INT8, NO_CALIBRATION

QUANT_CHOICES = ("float", "w8", "w4", "w8a8", "w16", "w3", "w2")
EMBEDDING_QUANT_CHOICES = ("float", "w8", "w16", "w4", "w3", "w2")   # gathered rows: no int8 matmul
MATMUL_ONLY_CHOICES = ("w8a8c", "w8a8cf")
"""Per-column weight scales with dynamic int8 activations: ORT's MatMulInteger takes them;
its ConvInteger does not, so convolutions are not offered it. ``w8a8c`` keeps 7-bit weights
(ORT's ``reduce_range``: its u8s8 kernels saturate int16 pair sums on x86 without VNNI);
``w8a8cf`` uses the full 8 bits, which CPUs with VNNI or ARM dot products compute exactly
(the sensitivity probe measures what either costs on this CPU)."""
INT8_KERNELS = tuple(DYNAMIC_INT8)
LOW_BITS = ("w3", "w2")
MIN_PACKED_WEIGHTS = 1024
"""Below this many weights, 2/3-bit packing, pruning and clustering save under ~3 KB."""
MIN_WEIGHTS_PER_CLUSTER = 16
"""A palette of k entries is offered only for layers with at least 16 * k weights."""
CALIBRATION_CHOICES = (NO_CALIBRATION, *CALIBRATION_METHODS)
MIN_STORED_TABLE = 1 << 16
"""An embedding table with few rows but this many weights (a position table: 512 x 384 in
MiniLM, a fifth of a 4 MB budget in float) still gets weight-storage knobs."""


def layer_weight_knobs(unit: str, kind: str, shape: Sequence[int], groups: int = 1):
    """(knobs, skips) for one layer's weight: ``kind`` is ``matmul``/``conv``/``gather``."""
    n = prod(shape)
    quant = EMBEDDING_QUANT_CHOICES if kind == "gather" else QUANT_CHOICES
    if kind == "matmul":
        quant = quant + MATMUL_ONLY_CHOICES
    skips = []
    if n < MIN_PACKED_WEIGHTS:
        quant = tuple(c for c in quant if c not in LOW_BITS)
        skips.append(Skip(unit, "2/3-bit quantization",
                          f"{n} weights (< {MIN_PACKED_WEIGHTS}): packing saves too little"))
    knobs = [Knob(unit, QUANT, quant, "quantization")]
    if groups > 1:
        reason = f"grouped conv (groups={groups}): {n // shape[0]} weights per filter"
    elif n < MIN_PACKED_WEIGHTS:
        reason = f"{n} weights (< {MIN_PACKED_WEIGHTS}): saves too little"
    else:
        reason = None
    if reason:
        skips += [Skip(unit, "magnitude sparsity", reason), Skip(unit, "weight clustering", reason)]
        return knobs, skips
    knobs.append(Knob(unit, SPARSITY, SPARSITY_CHOICES, "magnitude sparsity"))
    ks = tuple(k for k in CLUSTER_CHOICES if n >= MIN_WEIGHTS_PER_CLUSTER * k)
    if len(ks) > 1:
        knobs.append(Knob(unit, CLUSTERS, ks, "weight clustering"))
    return knobs, skips


def calibration_knob(knobs: Sequence) -> list:
    """The model-wide calibration knob, offered when some MatMul/Conv layer can take int8."""
    if any(k.name == QUANT and "w8a8" in k.choices for k in knobs):
        return [Knob(WHOLE_MODEL, CALIBRATION, CALIBRATION_CHOICES,
                     "static int8 activations (calibration method)")]
    return []


def torch_weight_knobs(model, example_args=(), input_names=()) -> tuple[list, list]:
    """(knobs, skips) for every Linear, Conv2d and large Embedding of a torch model: the
    weight-storage techniques (quantization, sparsity, clustering, calibration) are offered
    together, as they compose into one stored format."""
    from torch import nn

    from ..records import MIN_EMBEDDING_ROWS

    knobs, skips = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and (module.num_embeddings >= MIN_EMBEDDING_ROWS or
                                                 module.weight.numel() >= MIN_STORED_TABLE):
            k, s = layer_weight_knobs(name, "gather", tuple(module.weight.shape))
        elif isinstance(module, nn.Linear):
            k, s = layer_weight_knobs(name, "matmul", tuple(module.weight.shape))
        elif isinstance(module, nn.Conv2d):
            k, s = layer_weight_knobs(name, "conv", tuple(module.weight.shape), module.groups)
        else:
            continue
        knobs += k
        skips += s
    return knobs + calibration_knob(knobs), skips


def onnx_weight_knobs(weights: Mapping[str, tuple[str, tuple]]) -> tuple[list, list]:
    """(knobs, skips) for an ONNX model's weights (name -> (kind, shape), see
    :func:`.onnx_graph.weights`): int8 kernels only where ONNX Runtime's quantizers take
    the op (main-graph MatMul / Conv), weight-only storage elsewhere."""
    from .onnx_graph import WEIGHT_ONLY

    knobs, skips = [], []
    for name, (kind, shape) in weights.items():
        k, s = layer_weight_knobs(name, kind if kind in ("matmul", "conv", "gather") else "conv",
                                  shape)
        if kind in WEIGHT_ONLY:
            k[0] = replace(k[0], choices=tuple(c for c in k[0].choices if c not in INT8_KERNELS))
            s.append(Skip(name, "int8 kernels (w8a8)", f"{kind} weight: stored weight-only "
                          "(ONNX Runtime's int8 quantizers rewrite main-graph MatMul/Conv only)"))
        knobs += k
        skips += s
    return knobs + calibration_knob(knobs), skips


def uniform_plan(knobs: Sequence, **settings):
    """"Technique X alone at strength S": every knob named in ``settings`` that offers the
    value takes it (e.g. ``uniform_plan(knobs, quant="w3")``, ``uniform_plan(knobs,
    sparsity=0.9)``, ``uniform_plan(knobs, quant="w8", calibration="entropy")``)."""
    from ..plan import Plan

    units: dict[str, dict] = {}
    for knob in knobs:
        value = settings.get(knob.name)
        if value is not None and value in knob.choices and value != knob.choices[0]:
            units.setdefault(knob.unit, {})[knob.name] = value
    return Plan(units)
