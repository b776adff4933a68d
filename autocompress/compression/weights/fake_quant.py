"""Fake quantization in torch that reproduces the artifact's stored weights exactly (for QAT).

Each weight the plan compresses is rewritten on the fly as ``deq(w) + (w - w.detach())``
(straight-through estimator): the forward pass sees exactly the numbers the ONNX artifact
rebuilds, the gradient flows to the float weight. ``deq`` comes from one of:

- a fast mirror of the storage path (:mod:`.weight_storage` / :mod:`.quantize`): torch for
  INT8/INT4 DequantizeLinear, ORT dynamic int8, fp16 and the packed 2/3/4-bit grids; the
  storage module's own k-means for palettes (every palette weight of the model in one call
  per step); magnitude pruning first when the weight is sparse;
- the oracle: :func:`.weight_storage.compress_weights` itself run on a one-node ONNX model
  holding the weight, then the subgraph that rebuilds the weight evaluated (slow; every
  storage mode and static calibration included).

Before training, each layer's fast mirror is compared with the oracle on its initial
weights; a layer whose mirror is missing or differs in a single element uses the oracle.
``w8a8`` (dynamic) layers also fake-quantize their input as ONNX Runtime's
DynamicQuantizeLinear does. With a static calibration method the weights are exact but
the calibrated activation quantization is not simulated (activations stay float).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn.utils import parametrize

from ..plan import CALIBRATION, CLUSTERS, QUANT, SPARSITY, WHOLE_MODEL, Plan
from .onnx_graph import producing_nodes
from .quantize import INT4_BLOCK, OPSET, TABLE_BLOCK_ROWS
from .sparsity import magnitude_prune
from .storage import (DYNAMIC_INT8, DYNAMIC_MODES, INT_BITS, NO_CALIBRATION, WeightPlan,
                      compress_weights, packed_view, palette_edit, palette_edits, role)


@dataclass(frozen=True)
class Target:
    """One compressed weight: torch module, its ONNX initializer, layout and storage plan."""

    module: str
    init: str
    kind: str           # weight_storage.role: "matmul", "conv" or "gather"
    transposed: bool    # the ONNX tensor is the torch weight transposed (Linear -> MatMul [K, N])
    plan: WeightPlan
    calibration: str = NO_CALIBRATION
    groups: int = 1     # Conv groups (for the oracle's one-node model)


def weight_plans(plan: Plan, units: dict[str, str]) -> tuple[dict[str, WeightPlan], str]:
    """Per-initializer storage plans and the calibration method, as apply.apply_plan reads them."""
    weights = {init: WeightPlan(plan.get(unit, QUANT, "float"),
                                float(plan.get(unit, SPARSITY, 0.0)),
                                int(plan.get(unit, CLUSTERS, 0))) for init, unit in units.items()}
    return weights, plan.get(WHOLE_MODEL, CALIBRATION, NO_CALIBRATION)


def find_targets(model: nn.Module, proto: onnx.ModelProto, weights: dict[str, WeightPlan],
                 calibration: str = NO_CALIBRATION) -> list[Target]:
    """Match each compressed initializer to the torch module holding the same numbers."""
    from ..records import fingerprint

    by_content: dict[str, tuple[str, bool]] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
            weight = module.weight.detach().numpy()
            by_content[fingerprint(weight)] = (name, False)
            if weight.ndim == 2:
                by_content.setdefault(fingerprint(weight.T), (name, True))
    inits = {i.name: i for i in proto.graph.initializer}
    targets = []
    for init, wplan in sorted(weights.items()):
        kind = role(proto.graph, init) if init in inits else None
        hit = by_content.get(fingerprint(numpy_helper.to_array(inits[init]))) if kind else None
        if wplan == WeightPlan() or hit is None:
            continue
        module = model.get_submodule(hit[0])
        targets.append(Target(hit[0], init, kind, hit[1], wplan, calibration,
                              getattr(module, "groups", 1)))
    return targets


# --------------------------------------------------------------------------- fast mirror


def mirror(onnx_weight: torch.Tensor, kind: str, plan: WeightPlan,
           calibration: str = NO_CALIBRATION) -> torch.Tensor | None:
    """The storage path's rebuilt weight (ONNX layout), computed fast; None where only the
    oracle knows (static calibration, per-channel int8)."""
    from .storage import _mode

    mode = _mode(plan, kind, calibration)
    per_channel_int8 = DYNAMIC_MODES.get(mode, (False, False))[0]
    if mode == "static" or per_channel_int8:
        return None
    pruned, mask = _pruned(onnx_weight.numpy(), plan)
    w = onnx_weight if mask is None else torch.from_numpy(pruned)
    if mode == "clusters":     # palette indices cover the kept entries only
        return torch.from_numpy(palette_edit(pruned, mask, plan.clusters)[0])
    if mode == "dq":
        if kind == "gather":
            return _table_int8(w)
        bits = INT_BITS[plan.quant]
        if bits == 4 and kind == "matmul" and w.shape[0] >= INT4_BLOCK:
            return _blocked_int4(w)
        return _symmetric(w, bits, axis=1 if kind == "matmul" else 0)
    if mode == "dynamic":
        deq = _ort_per_tensor_int8(w)
    elif mode == "packed":
        deq = _packed(w, INT_BITS[plan.quant], kind)
    elif mode == "fp16":
        deq = w.half().float()
    else:   # "sparse" (float values, pruned) or "none"
        deq = w
    return deq if mask is None else deq * torch.from_numpy(mask)


def _symmetric(w: torch.Tensor, bits: int, axis: int) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    dims = tuple(i for i in range(w.ndim) if i != axis)
    amax = w.abs().amax(dim=dims, keepdim=True)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    return torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale


def _table_int8(w: torch.Tensor) -> torch.Tensor:
    """quantize.table_int8 in torch: 8-bit codes, a scale and offset per block of rows."""
    rows = w.shape[0]
    blocks = -(-rows // TABLE_BLOCK_ROWS)
    flat = w.reshape(rows, -1)
    padded = flat[-1:].detach().repeat(blocks * TABLE_BLOCK_ROWS, 1)
    padded[:rows] = flat.detach()
    view = padded.reshape(blocks, -1)
    lo, hi = view.amin(dim=1), view.amax(dim=1)
    scale = torch.where(hi > lo, (hi - lo) / 255, torch.ones_like(hi))
    each = torch.arange(blocks).repeat_interleave(TABLE_BLOCK_ROWS)[:rows]
    codes = torch.clamp(torch.round((flat - lo[each, None]) / scale[each, None]), 0, 255)
    return (codes * scale[each, None] + lo[each, None]).reshape(w.shape)


def _pruned(weight: np.ndarray, plan: WeightPlan) -> tuple[np.ndarray, np.ndarray | None]:
    """(``weight`` magnitude-pruned as the storage path prunes it, mask of the kept
    entries); the weight itself and no mask when the plan keeps every entry."""
    if plan.sparsity <= 0:
        return weight, None
    pruned = magnitude_prune(weight, plan.sparsity)
    return pruned, pruned != 0


def _packed(w: torch.Tensor, bits: int, kind: str) -> torch.Tensor:
    """weight_storage.packed_reference in torch: a scale per block or channel, rounded to
    fp16 (at least 2**-14), codes in [-qmax, qmax]."""
    shape, reduce = packed_view(tuple(w.shape), kind)
    view = w.reshape(shape)
    qmax = 2 ** (bits - 1) - 1
    amax = view.abs().amax(dim=reduce, keepdim=True)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    scale = torch.clamp(scale.half(), min=2 ** -14).float()
    return (torch.clamp(torch.round(view / scale), -qmax, qmax) * scale).reshape(w.shape)


def _blocked_int4(w: torch.Tensor) -> torch.Tensor:
    k, n = w.shape
    blocks = -(-k // INT4_BLOCK)
    padded = torch.zeros(blocks * INT4_BLOCK, n, dtype=w.dtype)
    padded[:k] = w
    amax = padded.abs().reshape(blocks, INT4_BLOCK, n).amax(dim=1)
    scale = torch.where(amax > 0, amax / 7, torch.ones_like(amax))
    scale = scale.repeat_interleave(INT4_BLOCK, dim=0)[:k]
    return torch.clamp(torch.round(w / scale), -8, 7) * scale


def _ort_per_tensor_int8(w: torch.Tensor) -> torch.Tensor:
    """ONNX Runtime's dynamic quantizer: symmetric int8, one scale (computed in float64)."""
    absmax = float(w.abs().max())
    scale = torch.tensor(2.0 * absmax / 254.0, dtype=torch.float64).float()
    if scale <= torch.finfo(torch.float32).tiny:
        scale = torch.tensor(1.0)
    return torch.clamp(torch.round(w / scale), -128, 127) * scale


def dynamic_quant_activation(x: torch.Tensor) -> torch.Tensor:
    """ONNX DynamicQuantizeLinear then dequantize: uint8, one scale and zero point per tensor."""
    lo = torch.clamp(x.detach().min(), max=0.0)
    hi = torch.clamp(x.detach().max(), min=0.0)
    scale = (hi - lo) / 255.0
    if scale <= 0:
        return x
    zero = torch.round(torch.clamp(-lo / scale, 0, 255))
    q = torch.clamp(torch.round(x.detach() / scale) + zero, 0, 255)
    return x + ((q - zero) * scale - x).detach()


# --------------------------------------------------------------------------- oracle


def oracle(onnx_weight: np.ndarray, kind: str, plan: WeightPlan,
           calibration: str = NO_CALIBRATION, groups: int = 1) -> np.ndarray:
    """The weight exactly as the artifact rebuilds it: compress_weights on a one-node model."""
    weight = numpy_helper.from_array(np.ascontiguousarray(onnx_weight, np.float32), "W")
    if kind == "gather":
        x = helper.make_tensor_value_info("X", TensorProto.INT64, [onnx_weight.shape[0]])
        node = helper.make_node("Gather", ["W", "X"], ["Y"], name="op")
        shape = None
    elif kind == "matmul":
        shape = [2, onnx_weight.shape[0]]
        node = helper.make_node("MatMul", ["X", "W"], ["Y"], name="op")
    else:
        shape = [2, onnx_weight.shape[1] * groups, *[3 * k for k in onnx_weight.shape[2:]]]
        node = helper.make_node("Conv", ["X", "W"], ["Y"], name="op", group=groups)
    if shape is not None:
        x = helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([node], "one", [x], [y], [weight]),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    rng = np.random.default_rng(0)      # activations only steer activation ranges, never weights
    batches = [] if shape is None or calibration == NO_CALIBRATION else \
        [{"X": rng.standard_normal(shape).astype(np.float32)} for _ in range(2)]
    stored = compress_weights(model, {"W": plan}, calibration, batches)
    if kind == "gather":
        return _evaluate(stored, "Y", {"X": np.arange(onnx_weight.shape[0], dtype=np.int64)})
    compute = next(n for n in stored.graph.node
                   if n.op_type in ("MatMul", "Conv", "MatMulInteger", "ConvInteger"))
    rebuilt = _evaluate(stored, compute.input[1], {})
    if compute.op_type.endswith("Integer"):   # ORT dynamic int8: (q - zero point) * scale
        scale = _evaluate(stored, compute.input[1].replace("_quantized", "_scale"), {})
        zero = _evaluate(stored, compute.input[3], {}) if len(compute.input) > 3 else 0
        rebuilt = ((rebuilt.astype(np.float32) - np.float32(zero)) * scale).astype(np.float32)
    return rebuilt


def _evaluate(model: onnx.ModelProto, output: str, feeds: dict) -> np.ndarray:
    """The value of ``output``: an initializer, or the nodes that produce it evaluated."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    nodes = producing_nodes(graph, output)
    if not nodes:
        return numpy_helper.to_array(next(i for i in graph.initializer if i.name == output))
    inputs = [i for i in graph.input if i.name in feeds]
    sub = helper.make_graph(nodes, "rebuild", inputs,
                            [helper.make_tensor_value_info(output, TensorProto.UNDEFINED, None)],
                            list(graph.initializer))
    sub_model = helper.make_model(sub, opset_imports=list(model.opset_import))
    return np.asarray(ReferenceEvaluator(sub_model).run(None, feeds)[0])


# --------------------------------------------------------------------------- attaching


class _FakeQuantWeight(nn.Module):
    """Parametrization: torch weight -> STE(dequantized weight), in the torch layout."""

    def __init__(self, target: Target, dequant: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.target = target
        self.dequant = dequant

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        w = weight.detach()
        if self.target.transposed:
            deq = self.dequant(w.t().contiguous()).t()
        else:
            deq = self.dequant(w)
        # exactly deq forward (w + (deq - w) rounds to a neighbour of deq when they are far
        # apart, as a 4-entry palette's are), identity gradient to the float weight
        return deq + (weight - weight.detach())


class FakeQuant:
    """Fake quantization attached to a model's weights; :meth:`remove` leaves float weights."""

    def __init__(self, model: nn.Module, targets: list[Target]):
        self.model = model
        self.targets = targets
        self.via_oracle: list[str] = []
        self._hooks = []
        self._palettes = _Palettes(model)
        for target in targets:
            module = model.get_submodule(target.module)
            dequant = self._choose(target, module.weight.detach())
            parametrize.register_parametrization(module, "weight",
                                                 _FakeQuantWeight(target, dequant))
            if target.plan.quant in DYNAMIC_INT8 and target.kind != "gather" and \
                    target.plan.clusters == 0 and target.calibration == NO_CALIBRATION:
                self._hooks.append(module.register_forward_pre_hook(
                    lambda _m, args: (dynamic_quant_activation(args[0]), *args[1:])))

    def _choose(self, target: Target, weight: torch.Tensor):
        from .storage import _mode

        onnx_w = weight.t().contiguous() if target.transposed else weight
        args = (target.kind, target.plan, target.calibration)
        fast = mirror(onnx_w, *args)
        truth = oracle(onnx_w.numpy(), *args, target.groups)
        if fast is not None and np.array_equal(fast.numpy(), truth):
            if _mode(target.plan, target.kind, target.calibration) == "clusters":
                self._palettes.add(target)
                return lambda w: self._palettes.rebuilt(target, w)
            return lambda w: mirror(w, *args)
        self.via_oracle.append(target.module)
        return lambda w: torch.from_numpy(oracle(w.numpy(), *args, target.groups))

    def remove(self) -> nn.Module:
        for hook in self._hooks:
            hook.remove()
        for target in self.targets:
            parametrize.remove_parametrizations(self.model.get_submodule(target.module), "weight",
                                                leave_parametrized=False)
        return self.model


class _Palettes:
    """The palette weights of a model, all clustered together the first time one of them is
    asked for after the weights changed (an optimizer step): :func:`palette_edits` in one
    call, not one k-means per weight. The same numbers as :func:`mirror`, checked by
    comparing each weight with the one that was clustered."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.targets: list[Target] = []
        self.rebuilt_by_init: dict[str, tuple[np.ndarray, torch.Tensor]] = {}

    def add(self, target: Target) -> None:
        self.targets.append(target)

    def rebuilt(self, target: Target, onnx_weight: torch.Tensor) -> torch.Tensor:
        weight = onnx_weight.numpy()
        hit = self.rebuilt_by_init.get(target.init)
        if hit is None or not np.array_equal(hit[0], weight):
            self._cluster_all()
            hit = self.rebuilt_by_init.get(target.init)
        if hit is None or not np.array_equal(hit[0], weight):   # not the module's own weight
            return mirror(onnx_weight, target.kind, target.plan, target.calibration)
        return hit[1]

    def _cluster_all(self) -> None:
        inputs, items = [], []
        for target in self.targets:
            module = self.model.get_submodule(target.module)
            weight = (module.parametrizations.weight.original if parametrize.is_parametrized(
                module, "weight") else module.weight).detach()   # before registration: float
            weight = (weight.t().contiguous() if target.transposed else weight).numpy().copy()
            inputs.append(weight)
            items.append((*_pruned(weight, target.plan), target.plan.clusters))
        self.rebuilt_by_init = {
            target.init: (weight, torch.from_numpy(edit))
            for target, weight, (edit, _) in zip(self.targets, inputs, palette_edits(items))}
