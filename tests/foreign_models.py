"""Small ONNX files written the way other exporters write them (issue 15), one per case:
weights in Constant nodes, weights inside If branches, free input dimensions, a scalar
integer input, recurrent weights. Built with onnx.helper: no torch exporter involved."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name + "_value"))


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def constant_mlp(path: Path, free_batch: bool = True) -> Path:
    """x [N, 64] -> MatMul(Constant W1 [64, 128]) -> Relu -> MatMul(Constant W2 [128, 10]):
    class scores, every weight a Constant node (0 initializers)."""
    rng = np.random.default_rng(1)
    w1 = (rng.standard_normal((64, 128)) / 8).astype(np.float32)
    w2 = (rng.standard_normal((128, 10)) / 11).astype(np.float32)
    nodes = [_const("w1", w1), _const("w2", w2),
             helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["logits"])]
    batch = "N" if free_batch else 1
    graph = helper.make_graph(nodes, "constant_mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])])
    return _save(graph, path)


def branch_model(path: Path) -> Path:
    """Like silero-vad: a scalar int64 ``sr`` input picks an If branch; each branch holds its
    own Constant weights (a Conv over ``audio`` [1, 1, T], T free, then a MatMul head)."""
    rng = np.random.default_rng(2)

    def branch(tag: str, channels: int) -> onnx.GraphProto:
        conv_w = (rng.standard_normal((channels, 1, 9)) / 3).astype(np.float32)
        head = (rng.standard_normal((channels, 8)) / 6).astype(np.float32)
        nodes = [_const(f"{tag}_conv_w", conv_w), _const(f"{tag}_head", head),
                 helper.make_node("Conv", ["audio", f"{tag}_conv_w"], [f"{tag}_c"], pads=[4, 4]),
                 helper.make_node("Relu", [f"{tag}_c"], [f"{tag}_r"]),
                 helper.make_node("ReduceMean", [f"{tag}_r"], [f"{tag}_m"], axes=[2], keepdims=0),
                 helper.make_node("MatMul", [f"{tag}_m", f"{tag}_head"], [f"{tag}_out"])]
        return helper.make_graph(nodes, tag, [], [
            helper.make_tensor_value_info(f"{tag}_out", TensorProto.FLOAT, [1, 8])])

    nodes = [_const("rate16k", np.array(16000, np.int64)),
             helper.make_node("Equal", ["sr", "rate16k"], ["is16k"]),
             helper.make_node("If", ["is16k"], ["out"], then_branch=branch("wide", 32),
                              else_branch=branch("narrow", 16))]
    graph = helper.make_graph(nodes, "branch_model", [
        helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 1, "T"]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8])])
    return _save(graph, path)


def recurrent_model(path: Path) -> Path:
    """An LSTM (hidden 32) over x [T, 1, 16] with Constant W / R, then a one-value MatMul head."""
    rng = np.random.default_rng(3)
    hidden = 32
    w = (rng.standard_normal((1, 4 * hidden, 16)) / 4).astype(np.float32)
    r = (rng.standard_normal((1, 4 * hidden, hidden)) / 6).astype(np.float32)
    head = (rng.standard_normal((hidden, 1)) / 6).astype(np.float32)
    nodes = [_const("W", w), _const("R", r), _const("head", head),
             helper.make_node("LSTM", ["x", "W", "R"], ["Y", "Y_h"], hidden_size=hidden),
             helper.make_node("Squeeze", ["Y_h", "axes0"], ["h"]),
             helper.make_node("MatMul", ["h", "head"], ["out"])]
    graph = helper.make_graph(nodes, "recurrent", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [20, 1, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1])],
        initializer=[numpy_helper.from_array(np.array([0], np.int64), "axes0")])
    return _save(graph, path)


def image_model(path: Path) -> Path:
    """A conv net over images [N, 3, H, W] with H, W free (initializer weights)."""
    rng = np.random.default_rng(4)
    conv = (rng.standard_normal((16, 3, 3, 3)) / 5).astype(np.float32)
    head = (rng.standard_normal((16, 5)) / 4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["image", "conv"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "head"], ["scores"])]
    graph = helper.make_graph(nodes, "image", [
        helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 5])],
        initializer=[numpy_helper.from_array(conv, "conv"), numpy_helper.from_array(head, "head")])
    return _save(graph, path)


def weightless_model(path: Path) -> Path:
    """Nothing to compress: y = relu(x) + 1."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "one"], ["y"])]
    graph = helper.make_graph(nodes, "weightless",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                              initializer=[numpy_helper.from_array(np.ones(1, np.float32), "one")])
    return _save(graph, path)
