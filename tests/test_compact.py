"""compression/compact.py: the trimmed graph computes the same thing, keeps the names
anything looks up, and is smaller."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from autocompress.compression.compact import compact_graph


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _clip_chain() -> onnx.ModelProto:
    """x -> MatMul(W) -> Clip(0, 6) -> MatMul(W2) -> Clip(0, 6) -> y, exporter-style names,
    one Constant node per Clip bound, shape annotations on the intermediates."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "layers.0.weight")
    w2 = numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "layers.1.weight")
    nodes, value_info, previous = [], [], "x"
    for i, (weight, width) in enumerate([("layers.0.weight", 8), ("layers.1.weight", 4)]):
        prefix = f"/layers/layers.{i}"
        nodes += [
            helper.make_node("MatMul", [previous, weight], [f"{prefix}/MatMul_output_0"],
                             name=f"{prefix}/MatMul"),
            helper.make_node("Constant", [], [f"{prefix}/Constant_output_0"], name=f"{prefix}/Constant",
                             value=numpy_helper.from_array(np.array(0.0, np.float32))),
            helper.make_node("Constant", [], [f"{prefix}/Constant_1_output_0"],
                             name=f"{prefix}/Constant_1",
                             value=numpy_helper.from_array(np.array(6.0, np.float32))),
            helper.make_node("Clip", [f"{prefix}/MatMul_output_0", f"{prefix}/Constant_output_0",
                                      f"{prefix}/Constant_1_output_0"],
                             ["y" if i == 1 else f"{prefix}/Clip_output_0"], name=f"{prefix}/Clip")]
        value_info.append(helper.make_tensor_value_info(f"{prefix}/MatMul_output_0",
                                                        TensorProto.FLOAT, [2, width]))
        previous = f"{prefix}/Clip_output_0"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [w1, w2], value_info=value_info)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_compacted_graph_computes_the_same_and_keeps_weights_inputs_and_outputs_by_name():
    model = _clip_chain()
    x = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
    before = _run(model, {"x": x})
    size = model.ByteSize()
    compact_graph(model)
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_array_equal(_run(model, {"x": x})[0], before[0])
    assert model.ByteSize() < 0.8 * size
    assert [i.name for i in model.graph.initializer] == ["layers.0.weight", "layers.1.weight"]
    assert [v.name for v in model.graph.input] == ["x"] and model.graph.output[0].name == "y"
    assert not any("/" in n.name or any("/" in v for v in n.output) for n in model.graph.node)
    assert len(model.graph.value_info) == 0
    # the four Clip bounds were two values: one Constant node each remains
    assert sum(n.op_type == "Constant" for n in model.graph.node) == 2


def test_compacting_is_deterministic():
    a, b = compact_graph(_clip_chain()), compact_graph(_clip_chain())
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def test_subgraph_nodes_and_the_values_they_read_keep_their_names():
    """An If whose branches read an outer intermediate by name: that name and the If's own
    name survive; the graph still runs both branches right."""
    outer = helper.make_node("Add", ["x", "x"], ["/outer/Add_output_0"], name="/outer/Add")
    cond = helper.make_node("ReduceMax", ["x"], ["/cond/Max_output_0"], name="/cond/Max", keepdims=0)
    test = helper.make_node("Greater", ["/cond/Max_output_0", "zero"], ["/cond/Greater_output_0"],
                            name="/cond/Greater")

    def branch(op: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node(op, ["/outer/Add_output_0"], ["out_" + op])], op,
                                 [], [helper.make_tensor_value_info("out_" + op, TensorProto.FLOAT, [3])])

    if_node = helper.make_node("If", ["/cond/Greater_output_0"], ["y"], name="ee_if",
                               then_branch=branch("Relu"), else_branch=branch("Neg"))
    graph = helper.make_graph(
        [outer, cond, test, if_node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    feeds = [np.array([1.0, -2.0, 3.0], np.float32), np.array([-1.0, -2.0, -3.0], np.float32)]
    before = [_run(model, {"x": x})[0] for x in feeds]
    compact_graph(model)
    onnx.checker.check_model(model, full_check=True)
    for x, expected in zip(feeds, before):
        np.testing.assert_array_equal(_run(model, {"x": x})[0], expected)
    names = {n.op_type: n for n in model.graph.node}
    assert names["If"].name == "ee_if"
    assert names["Add"].output[0] == "/outer/Add_output_0"     # read inside the branches
    assert names["ReduceMax"].output[0] != "/cond/Max_output_0"  # read only outside
