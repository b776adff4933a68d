"""Bit-packed weight storage that ONNX Runtime rebuilds in-graph with standard ops.

A weight is stored as small integer *codes* (``bits`` per code, packed densely into a
uint8 initializer of exactly ``ceil(n * bits / 8)`` bytes), a lookup table (LUT) that
maps codes to values, and optionally a 1-bit-per-weight mask of the nonzero positions
(then only the nonzero entries have codes). The graph rebuilds the dense tensor with
Pad/Cast/Mul/ReduceSum/Div/Mod (unpack), Gather (LUT), CumSum/Gather (mask scatter)
and Reshape. Every input is a constant, so ONNX Runtime's constant folding turns the
subgraph into a plain initializer at session load: the file is small, inference runs
the ordinary kernels.

Codes of ``bits`` bits are packed in groups: ``g = lcm(bits, 8) / bits`` codes fill
``B = lcm(bits, 8) / 8`` bytes, little-endian (code ``j`` of a group sits at bit
``bits * j`` of the group's integer).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def group_shape(bits: int) -> tuple[int, int]:
    """(codes per group, bytes per group) for ``bits``-bit codes."""
    if not 1 <= bits <= 8:
        raise ValueError(f"codes must be 1..8 bits, got {bits}")
    span = math.lcm(bits, 8)
    return span // bits, span // 8


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack nonnegative integer codes < 2**bits into ``ceil(n * bits / 8)`` uint8 bytes."""
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    if codes.size and (codes.min() < 0 or codes.max() >= 2 ** bits):
        raise ValueError(f"codes out of range for {bits} bits")
    n = codes.size
    if bits == 8:
        return codes.astype(np.uint8)
    g, nbytes = group_shape(bits)
    groups = -(-n // g)
    padded = np.zeros(groups * g, np.uint64)
    padded[:n] = codes
    shifts = (np.arange(g, dtype=np.uint64) * np.uint64(bits))
    words = (padded.reshape(groups, g) << shifts).sum(axis=1, dtype=np.uint64)
    out = ((words[:, None] >> (np.arange(nbytes, dtype=np.uint64) * np.uint64(8)))
           & np.uint64(0xFF)).astype(np.uint8).reshape(-1)
    return out[: -(-n * bits // 8)]


def unpack_codes(packed: np.ndarray, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes` (numpy reference of the in-graph unpacking)."""
    packed = np.asarray(packed, np.uint8).reshape(-1)
    if bits == 8:
        return packed[:n].astype(np.int64)
    g, nbytes = group_shape(bits)
    groups = -(-n // g)
    full = np.zeros(groups * nbytes, np.uint64)
    full[: packed.size] = packed
    words = (full.reshape(groups, nbytes) << (np.arange(nbytes, dtype=np.uint64) * np.uint64(8))
             ).sum(axis=1, dtype=np.uint64)
    codes = (words[:, None] >> (np.arange(g, dtype=np.uint64) * np.uint64(bits))) & np.uint64(2 ** bits - 1)
    return codes.reshape(-1)[:n].astype(np.int64)


@dataclass
class Encoded:
    """Initializers and nodes that rebuild one tensor named ``output``."""

    output: str
    initializers: list = field(default_factory=list)
    nodes: list = field(default_factory=list)

    def stored_bytes(self) -> int:
        return sum(len(numpy_helper.to_array(i).tobytes()) for i in self.initializers)


class _Builder:
    """Builds one tensor's rebuild graph. Stored data keeps the tensor's name
    (``W_codes``, ``W_mask``); graph plumbing gets short hashed names, and constants that
    depend only on the bit width are shared by every packed tensor of a model (``pack_*``),
    so a small layer's rebuild costs a few hundred bytes, not kilobytes."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.short = "~" + hashlib.sha1(prefix.encode()).hexdigest()[:10]
        self.encoded = Encoded(prefix)
        self.count = 0

    def const(self, suffix: str, array: np.ndarray) -> str:
        """Stored data, named after the tensor."""
        return self._add(f"{self.prefix}_{suffix}", array)

    def small(self, suffix: str, array: np.ndarray) -> str:
        """A per-tensor constant of a few elements (shapes, lengths)."""
        return self._add(f"{self.short}_{suffix}", array)

    def shared(self, key: str, array: np.ndarray) -> str:
        """A constant fully determined by ``key``: one copy per model."""
        return self._add(f"pack_{key}", array)

    def _add(self, name: str, array: np.ndarray) -> str:
        if all(i.name != name for i in self.encoded.initializers):
            self.encoded.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        self.count += 1
        output = output or f"{self.short}/{self.count}"
        self.encoded.nodes.append(helper.make_node(op, inputs, [output], **attrs))   # unnamed: bytes
        return output

    def codes(self, suffix: str, codes: np.ndarray, bits: int) -> str:
        """Packed codes as an initializer, unpacked in-graph to int64 [n]."""
        n = int(np.asarray(codes).size)
        packed = self.const(suffix, pack_codes(codes, bits))
        if bits == 8:
            return self.node("Cast", [packed], to=TensorProto.INT64)
        g, nbytes = group_shape(bits)
        groups = -(-n // g)
        stored = -(-n * bits // 8)
        x = packed
        if groups * nbytes > stored:
            x = self.node("Pad", [x, self.small(suffix + "_pad", np.array([0, groups * nbytes - stored], np.int64))])
        x = self.node("Cast", [x], to=TensorProto.INT64)
        x = self.node("Reshape", [x, self.shared(f"rows{nbytes}", np.array([-1, nbytes], np.int64))])
        if nbytes > 1:
            weights = (256 ** np.arange(nbytes, dtype=np.int64)).astype(np.int64)
            x = self.node("Mul", [x, self.shared(f"bytepos{nbytes}", weights)])
            x = self.node("ReduceSum", [x, self.shared("axis1", np.array([1], np.int64))], keepdims=1)
        x = self.node("Div", [x, self.shared(f"shift{bits}", (2 ** (bits * np.arange(g))).astype(np.int64))])
        x = self.node("Mod", [x, self.shared(f"mod{bits}", np.array(2 ** bits, np.int64))])
        x = self.node("Reshape", [x, self.shared("flat", np.array([-1], np.int64))])
        if groups * g > n:
            x = self.node("Slice", [x, self.shared("zero1", np.array([0], np.int64)),
                                    self.small(suffix + "_end", np.array([n], np.int64))])
        return x


def encode(name: str, shape: tuple, *, codes: np.ndarray | None = None, bits: int = 8,
           lut: np.ndarray | None = None, values: np.ndarray | None = None,
           mask: np.ndarray | None = None, lut_key: str | None = None) -> Encoded:
    """Storage + rebuild graph for a tensor of ``shape`` named ``name``.

    Entries come either from ``codes`` (``bits``-bit, looked up in ``lut``, whose dtype
    is the output's) or from raw ``values`` (any dtype). With ``mask`` (bool, ``shape``),
    codes/values hold only the entries where the mask is set, in row-major order, and
    the rest of the tensor is zero. ``lut_key`` names a LUT that depends only on the key
    (e.g. a bit width's integer grid), so every tensor of the model shares one copy.
    Shared constants appear in every Encoded: add them to a graph once (:func:`add_to_graph`).
    """
    b = _Builder(name)
    if codes is not None:
        dtype = np.asarray(lut).dtype
        table = b.shared(lut_key, lut) if lut_key else b.const("lut", np.asarray(lut))
        entries = b.node("Gather", [table, b.codes("codes", codes, bits)], axis=0)
    else:
        dtype = np.asarray(values).dtype
        entries = b.const("values", np.asarray(values).reshape(-1))
    if mask is not None:
        flat = np.asarray(mask, bool).reshape(-1)
        bitmap = b.codes("mask", flat.astype(np.int64), 1)
        position = b.node("CumSum", [bitmap, b.shared("axis0", np.array(0, np.int64))])
        position = b.node("Mul", [position, bitmap])          # 0 where pruned, k for the k-th kept
        zero = b.shared(f"zero_{np.dtype(dtype).name}", np.zeros(1, dtype))
        entries = b.node("Concat", [zero, entries], axis=0)
        entries = b.node("Gather", [entries, position], axis=0)
    b.node("Reshape", [entries, b.small("shape", np.array(shape, np.int64))], output=name)
    return b.encoded


def add_to_graph(graph, encoded: Encoded, replaces=None) -> None:
    """Put ``encoded`` in ``graph`` (nodes first: they read only constants), skipping shared
    constants already there, and drop the initializer it ``replaces``."""
    if replaces is not None:
        graph.initializer.remove(replaces)
    present = {i.name for i in graph.initializer}
    graph.initializer.extend(i for i in encoded.initializers if i.name not in present)
    for offset, node in enumerate(encoded.nodes):
        graph.node.insert(offset, node)
