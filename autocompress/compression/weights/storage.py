"""How each weight initializer of an ONNX graph is stored: pruned, clustered, quantized, packed.

One :class:`WeightPlan` per initializer; :func:`compress_weights` applies them all:

1. float edits: magnitude pruning (:mod:`.sparsity`), then clustering (:mod:`.clustering`);
2. int8 kernels through ONNX Runtime's quantizers: static QDQ with calibrated activations
   (:mod:`.calibration`, when a calibration method is chosen) or dynamic (``w8a8``);
3. storage: every weight whose entries are codes (low-bit grid, palette index) or that is
   sparse is re-stored packed (:mod:`.packing`) and rebuilt in-graph; the other
   quantized forms keep ONNX's own low-bit types (INT8/INT4 DequantizeLinear, fp16 Cast).

Rules when several techniques meet on one weight (every combination applies; none fails):

- ``clusters`` > 0 stores palette indices; the weight's ``quant`` is then not applied
  (the palette already is the weight's value set) and its activations stay float.
- ``sparsity`` composes with every other setting: only the kept entries are stored
  (their codes, palette indices, int8 values or floats) plus a 1-bit mask, when that is
  smaller than the dense store (2-bit codes at 50% sparsity are not: zeros stay codes).
- with a calibration method set, every weight quantized to 2..8 bits (``w8a8`` too) runs
  static int8 QDQ kernels, its codes mapped to int8 through a lookup table in-graph.
"""
from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import onnx_graph, packing
from .clustering import kmeans_many
from .sparsity import magnitude_prune

INT_BITS = {"w8": 8, "w4": 4, "w3": 3, "w2": 2, "w8a8": 8, "w8a8c": 8, "w8a8cf": 8}
BLOCK_SIZES = (64, 32, 16)    # rows of a MatMul weight sharing one scale in packed storage
NO_CALIBRATION = "none"
DYNAMIC_INT8 = {"w8a8": "dynamic", "w8a8c": "dynamic-channel", "w8a8cf": "dynamic-channel-full"}
"""ORT's dynamic int8 kernels: one weight scale per tensor, or one per output column (7-bit
or full-range weights, see :data:`.weight_knobs.MATMUL_ONLY_CHOICES`)."""
DYNAMIC_MODES = {"dynamic": (False, False), "dynamic-channel": (True, True),
                 "dynamic-channel-full": (True, False)}
"""Each dynamic int8 mode's ``quantize_dynamic`` settings: (per_channel, reduce_range)."""
MASK_GRAPH_BYTES = 1024
"""A sparse store (1-bit mask + kept entries) must beat the dense one by this much, the
size of its scatter graph; else pruned weights are stored dense (zeros as ordinary values)."""


@dataclass(frozen=True)
class WeightPlan:
    """What to do to one weight: ``quant`` choice, pruned ``sparsity``, palette size ``clusters``."""

    quant: str = "float"
    sparsity: float = 0.0
    clusters: int = 0


def role(graph: onnx.GraphProto, name: str, found: dict | None = None) -> str | None:
    """How a weight is used (:func:`.onnx_graph.kind_of`: ``matmul`` / ``conv`` /
    ``gather`` in the main graph, or a weight-only kind), None if it is also read as
    something other than a weight (then it is left alone). ``found``: the graph's
    :func:`.onnx_graph.uses`, when the caller asks about many weights."""
    found = onnx_graph.uses(graph) if found is None else found
    return onnx_graph.kind_of(name, found.get(name, []))


def compress_weights(model: onnx.ModelProto, plans: Mapping[str, WeightPlan],
                     calibration: str = NO_CALIBRATION,
                     batches: Sequence[dict] = ()) -> onnx.ModelProto:
    """Apply every plan to its initializer; returns the rewritten model (input may be modified)."""
    inits = {i.name: i for i in model.graph.initializer}
    for index, node in enumerate(model.graph.node):   # ORT's quantizers select nodes by name
        if not node.name:
            node.name = f"{node.op_type}_{index}_unnamed"
    todo, found = {}, onnx_graph.uses(model.graph)
    for name, plan in sorted(plans.items()):
        kind = role(model.graph, name, found) if name in inits else None
        if kind is not None and plan != WeightPlan():
            todo[name] = (plan, kind)
    prepared = {name: _float_edits(inits[name], plan) for name, (plan, _) in todo.items()}
    modes = {name: _mode(plan, kind, calibration) for name, (plan, kind) in todo.items()}
    static = {n: _static_codes(inits[n], INT_BITS[todo[n][0].quant], todo[n][1])
              for n, m in modes.items() if m == "static"}
    model = _run_ort_quantizers(model, todo, modes, calibration, batches)
    inits = {i.name: i for i in model.graph.initializer}
    for name, mode in sorted(modes.items()):
        plan, kind = todo[name]
        weight, mask, palette = prepared[name]
        if mode != "clusters":   # palette indices cover kept entries only: the mask stays
            mask = _worth_mask(mask, _entry_bits(mode, plan))
        if mode == "static":
            _store_static(model.graph, inits, name, static[name], mask, kind)
        elif mode in DYNAMIC_INT8.values():
            _store_int8_sparse(model.graph, inits, name + "_quantized", mask)
        elif mode == "clusters":
            _replace(model.graph, inits[name], packing.encode(
                name, weight.shape, codes=palette[1], bits=_index_bits(palette[0].size),
                lut=palette[0], mask=mask))
        elif mode == "fp16":
            _store_fp16(model.graph, inits[name], weight, mask)
        elif mode == "dq":
            from .quantize import weight_only

            _set(inits[name], weight)
            weight_only(model.graph, inits[name], INT_BITS[plan.quant], kind,
                         [n for n in model.graph.node if name in n.input])
        elif mode == "packed":
            _store_packed(model.graph, inits[name], weight, INT_BITS[plan.quant], kind, mask)
        elif mode == "sparse" and mask is not None:
            _replace(model.graph, inits[name], packing.encode(
                name, weight.shape, values=weight[mask], mask=mask))
    return model


def _entry_bits(mode: str, plan: WeightPlan) -> int:
    return {"fp16": 16, "sparse": 32}.get(mode, INT_BITS.get(plan.quant, 32))


def _worth_mask(mask, bits: int):
    """``mask`` if storing only the kept entries (plus 1 bit each for the mask) is smaller."""
    if mask is None:
        return None
    n, kept = mask.size, int(mask.sum())
    saved_bytes = (n * bits - kept * bits - n) / 8
    return mask if saved_bytes > MASK_GRAPH_BYTES else None


def _mode(plan: WeightPlan, kind: str, calibration: str) -> str:
    if plan.clusters > 0:
        return "clusters"
    sparse = plan.sparsity > 0
    int8_kernels = kind in ("matmul", "conv")
    if plan.quant in INT_BITS and calibration != NO_CALIBRATION and int8_kernels:
        return "static"
    if plan.quant in DYNAMIC_INT8:
        return DYNAMIC_INT8[plan.quant] if int8_kernels else "packed"
    if plan.quant == "w16":
        return "fp16"
    if (plan.quant in ("w8", "w4") and not sparse and (kind != "gather" or plan.quant == "w8")
            and kind not in onnx_graph.WEIGHT_ONLY):
        return "dq"   # weight-only kinds are packed: ORT folds that at load, never DequantizeLinear
    if plan.quant in INT_BITS:
        return "packed"
    return "sparse" if sparse else "none"


def _float_edits(init: TensorProto, plan: WeightPlan):
    """(edited float weight, kept-entry mask or None, (palette, indices) or None); the
    initializer is updated in place so ORT's quantizers see the edited weight.

    Pruning and clustering depend only on the weight's values and the plan, so their results
    are remembered (:data:`_EDITS`): a search asks for the same weight at the same setting
    again and again (a 16-entry palette of MiniLM's word embedding costs seconds)."""
    if plan.sparsity <= 0 and plan.clusters <= 0:
        weight = numpy_helper.to_array(init).astype(np.float32)
        _set(init, weight)
        return weight, None, None
    key = (hashlib.sha1(init.SerializeToString(deterministic=True)).hexdigest(),
           plan.sparsity, plan.clusters)
    edits = _EDITS.get(key)
    if edits is None:
        edits = _EDITS.put(key, _compute_float_edits(init, plan))
    _set(init, edits[0])
    return edits


class _EditCache:
    """Least recently used float edits, bounded by the bytes of the arrays they hold. The
    arrays are read-only: a caller that edits one in place fails loudly instead of
    corrupting later trials."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: "OrderedDict[tuple, tuple]" = OrderedDict()

    def get(self, key):
        edits = self.entries.get(key)
        if edits is not None:
            self.entries.move_to_end(key)
        return edits

    def put(self, key, edits: tuple) -> tuple:
        size = _nbytes(edits)
        for array in _arrays(edits):
            array.setflags(write=False)
        if size > self.max_bytes:
            return edits
        self.entries[key] = edits
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= _nbytes(dropped)
        return edits


def _arrays(edits: tuple) -> list[np.ndarray]:
    weight, mask, palette = edits
    return [a for a in (weight, mask, *(palette or ())) if a is not None]


def _nbytes(edits: tuple) -> int:
    return sum(a.nbytes for a in _arrays(edits))


EDIT_CACHE_BYTES = 768 * 2**20
_EDITS = _EditCache(EDIT_CACHE_BYTES)


def _compute_float_edits(init: TensorProto, plan: WeightPlan):
    weight = numpy_helper.to_array(init).astype(np.float32)
    mask = None
    if plan.sparsity > 0:
        weight = magnitude_prune(weight, plan.sparsity)
        mask = weight != 0
    palette = None
    if plan.clusters > 0:
        weight, palette = palette_edit(weight, mask, plan.clusters)
    return weight, mask, palette


def palette_edit(weight: np.ndarray, mask: np.ndarray | None, k: int):
    """(``weight`` with its kept entries, every entry without a mask, replaced by their
    ``k``-entry palette values; (palette, index over the kept entries))."""
    return palette_edits([(weight, mask, k)])[0]


def palette_edits(items):
    """:func:`palette_edit` of each (weight, mask, k), clustered together (QAT rebuilds
    every palette weight of a model at every step)."""
    kept = [weight[mask] if mask is not None else weight.reshape(-1) for weight, mask, _ in items]
    edits = []
    for (weight, mask, _), (values, index) in zip(
            items, kmeans_many([(v, k) for v, (_, _, k) in zip(kept, items)])):
        if mask is not None:
            weight = weight.copy()
            weight[mask] = values[index]
        else:
            weight = values[index].reshape(weight.shape)
        edits.append((weight, (values, index)))
    return edits


def _set(init: TensorProto, weight: np.ndarray) -> None:
    init.CopyFrom(numpy_helper.from_array(weight.astype(np.float32), init.name))


def _index_bits(k: int) -> int:
    return max(1, int(np.ceil(np.log2(k))))


# --- int8 kernels through ONNX Runtime's quantizers -------------------------------------


def _run_ort_quantizers(model, todo, modes, calibration, batches) -> onnx.ModelProto:
    def nodes_of(mode):
        return sorted({n.name for n in model.graph.node for w, m in modes.items()
                       if m == mode and w in n.input and n.op_type in ("MatMul", "Conv")})

    static_nodes = nodes_of("static")
    if static_nodes:
        from .calibration import quantize_static_nodes

        model = quantize_static_nodes(model, static_nodes, calibration, batches)
    for mode, (per_channel, reduce_range) in DYNAMIC_MODES.items():
        dynamic_nodes = nodes_of(mode)
        if dynamic_nodes:
            from .quantize import quantize_dynamic_nodes

            model = quantize_dynamic_nodes(model, dynamic_nodes, per_channel, reduce_range)
    return model


def _static_codes(init: TensorProto, bits: int, kind: str):
    """Snap the float weight to a per-channel ``bits``-bit grid (ORT's int8 channel axis),
    so ORT's int8 values are a function of our codes. Returns the codes."""
    weight = numpy_helper.to_array(init).astype(np.float32)
    reduce = (0,) if kind == "matmul" else tuple(range(1, weight.ndim))
    q, scale = _symmetric(weight, bits, reduce)
    if bits < 8:
        _set(init, q * scale)
    return q + (2 ** (bits - 1) - 1), bits


def _store_static(graph, inits, name, static, mask, kind) -> None:
    codes, bits = static
    stored = inits.get(name + "_quantized")
    if stored is None:   # ORT left the node float: store the snapped weight packed instead
        if name in inits:
            weight = numpy_helper.to_array(inits[name]).astype(np.float32)
            _store_packed(graph, inits[name], weight, bits, kind, mask)
        return
    int8 = numpy_helper.to_array(stored)
    if bits == 8:
        if mask is not None:
            _store_int8_sparse(graph, inits, stored.name, mask)
        return
    lut = np.zeros(2 ** bits, np.int8)
    lut[codes.reshape(-1)] = int8.reshape(-1)
    if not np.array_equal(lut[codes], int8):   # not seen; keep ORT's int8 rather than fail
        warnings.warn(f"{name}: ORT's int8 values do not follow the {bits}-bit codes; stored as int8")
        return _store_int8_sparse(graph, inits, stored.name, mask)
    keep = mask.reshape(-1) if mask is not None else slice(None)
    _replace(graph, stored, packing.encode(stored.name, int8.shape, codes=codes.reshape(-1)[keep],
                                           bits=bits, lut=lut, mask=mask))


def _store_int8_sparse(graph, inits, name, mask) -> None:
    if mask is None or name not in inits:
        return
    int8 = numpy_helper.to_array(inits[name])
    _replace(graph, inits[name], packing.encode(name, int8.shape, values=int8[mask], mask=mask))


# --- weight-only storage ------------------------------------------------------------------


def _symmetric(weight: np.ndarray, bits: int, reduce: tuple, fp16_scale: bool = False):
    """Symmetric integer grid, one scale per slice (max |w| over ``reduce`` axes):
    (q in [-qmax, qmax], scale broadcastable to ``weight``)."""
    qmax = 2 ** (bits - 1) - 1
    amax = np.abs(weight).max(axis=reduce, keepdims=True)
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    if fp16_scale:
        scale = np.maximum(scale.astype(np.float16), np.float16(2 ** -14)).astype(np.float32)
    q = np.clip(np.round(weight / scale), -qmax, qmax).astype(np.int64)
    return q, scale


def packed_grid(weight: np.ndarray, bits: int, kind: str):
    """(view, q, fp16-exact scale) of packed weight-only storage. One scale covers a block
    of B rows of a MatMul column ([K, N] viewed as [K/B, B, N]; per column when no block
    divides K), an output channel of a Conv, a row of an embedding table, a gate row of a
    recurrent weight ([D, G*H, I] viewed as [D*G*H, I])."""
    shape, reduce = packed_view(weight.shape, kind)
    view = weight.reshape(shape)
    q, scale = _symmetric(view, bits, reduce, fp16_scale=True)
    return view, q, scale


def packed_view(shape: tuple, kind: str) -> tuple[tuple, tuple]:
    """(view shape, axes one scale spans) of :func:`packed_grid` (shared with QAT's mirror)."""
    kind = onnx_graph.base_kind(kind)
    if kind == "recurrent":
        return (-1, shape[-1]), (1,)
    if kind == "matmul":
        k, n = shape
        block = next((b for b in BLOCK_SIZES if k % b == 0 and k > b), k)
        return (k // block, block, n), (1,)
    return tuple(shape), tuple(range(1, len(shape)))


def packed_reference(weight: np.ndarray, bits: int, kind: str, mask=None) -> np.ndarray:
    """The float weight that packed ``bits``-bit storage rebuilds (numpy reference)."""
    _, q, scale = packed_grid(weight, bits, kind)
    out = (q * scale).reshape(weight.shape).astype(np.float32)
    return out if mask is None else np.where(mask, out, 0).astype(np.float32)


def _store_packed(graph, init, weight, bits, kind, mask) -> None:
    """Codes (``bits`` per kept weight) x fp16 scale per block/channel, rebuilt in-graph."""
    view, q, scale = packed_grid(weight, bits, kind)
    qmax = 2 ** (bits - 1) - 1
    codes = (q + qmax).reshape(-1)
    vmask = None if mask is None else mask.reshape(view.shape)
    if vmask is not None:
        codes = codes[vmask.reshape(-1)]
    lut = np.arange(-qmax, qmax + 1, dtype=np.float32)
    enc = packing.encode(init.name + "_codes", view.shape, codes=codes, bits=bits, lut=lut,
                         mask=vmask, lut_key=f"grid{bits}")
    scale_name = init.name + "_scale16"
    enc.initializers.append(numpy_helper.from_array(scale.astype(np.float16), scale_name))
    enc.nodes.append(helper.make_node("Cast", [scale_name], [enc.output + "/s"], to=TensorProto.FLOAT))
    product = init.name if view.shape == weight.shape else enc.output + "/b"
    enc.nodes.append(helper.make_node("Mul", [enc.output, enc.output + "/s"], [product]))
    if product != init.name:
        shape_name = enc.output + "/shape"
        enc.initializers.append(numpy_helper.from_array(np.array(weight.shape, np.int64), shape_name))
        enc.nodes.append(helper.make_node("Reshape", [product, shape_name], [init.name]))
    enc.output = init.name
    _replace(graph, init, enc)


def _store_fp16(graph, init, weight, mask) -> None:
    half = weight.astype(np.float16)
    if mask is not None:
        enc = packing.encode(init.name + "_fp16", weight.shape, values=half[mask], mask=mask)
    else:
        enc = packing.Encoded(init.name + "_fp16", [numpy_helper.from_array(half, init.name + "_fp16")])
    enc.nodes.append(helper.make_node("Cast", [enc.output], [init.name], name=init.name + "_cast",
                                      to=TensorProto.FLOAT))
    enc.output = init.name
    _replace(graph, init, enc)


def _replace(graph, old: TensorProto, enc: packing.Encoded) -> None:
    """Swap an initializer for storage + rebuild nodes."""
    packing.add_to_graph(graph, enc, replaces=old)
