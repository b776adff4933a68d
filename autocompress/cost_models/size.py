"""Artifact size from the graph: weight payload by data type + the graph's structure.

The payload is computed from each initializer's shape and data type (INT4 packs two
values per byte), not from its bytes; the structure is the serialized size of the model
with every tensor payload removed (node list, names, attributes, shapes). Their sum is
the file's size up to a few bytes of length prefixes per tensor. ``breakdown`` says
where the bytes are, which is what a size budget needs to know.
"""
from __future__ import annotations

import math

import onnx
from onnx import TensorProto

BITS = {TensorProto.FLOAT: 32, TensorProto.FLOAT16: 16, TensorProto.BFLOAT16: 16,
        TensorProto.DOUBLE: 64, TensorProto.INT64: 64, TensorProto.UINT64: 64,
        TensorProto.INT32: 32, TensorProto.UINT32: 32, TensorProto.INT16: 16,
        TensorProto.UINT16: 16, TensorProto.INT8: 8, TensorProto.UINT8: 8, TensorProto.BOOL: 8,
        TensorProto.INT4: 4, TensorProto.UINT4: 4}
PAYLOAD_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                  "uint64_data", "string_data")


def payload_bytes(tensor: TensorProto) -> int:
    """Bytes of a tensor's values as stored: elements x bits, rounded up to whole bytes."""
    return math.ceil(math.prod(tensor.dims) * BITS.get(tensor.data_type, 32) / 8)


def _tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


def breakdown(model: onnx.ModelProto) -> dict:
    """{'payload': {dtype name: bytes}, 'structure': bytes, 'total': bytes} predicted."""
    skeleton = onnx.ModelProto.FromString(model.SerializeToString())
    payload: dict[str, int] = {}
    framing = 0
    for tensor in _tensors(skeleton.graph):
        name = TensorProto.DataType.Name(tensor.data_type).lower()
        n = payload_bytes(tensor)
        payload[name] = payload.get(name, 0) + n
        for field in PAYLOAD_FIELDS:
            tensor.ClearField(field)
        if n:   # raw_data's tag and length, and the tensor's own length prefix growing
            bare = tensor.ByteSize()
            framing += 1 + _varint_size(n) + _varint_size(bare + 1 + _varint_size(n) + n) \
                - _varint_size(bare)
    structure = skeleton.ByteSize() + framing
    return {"payload": payload, "structure": structure,
            "total": structure + sum(payload.values())}


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def predict_size(model: onnx.ModelProto | str) -> int:
    """Predicted bytes of the ONNX file ``model`` is (or would be) written as."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    return breakdown(model)["total"]
