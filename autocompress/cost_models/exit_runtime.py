"""Early-exit artifacts at run time: per-input runs, exit rate, each path's latency.

An early-exit artifact (:mod:`.early_exit`) decides per batch; here every evaluation input
runs alone (batch 1), so the exit rate and the quality are what a deployment would see.
Latency: each path is timed on the workload's example input with the threshold forced
(-inf: always exit, +inf: never), and the expected latency weights them by the exit rate.
Cost models read the two paths as plain graphs (:func:`path_models`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from ..compression.early_exit import EXIT_TAKEN, THRESHOLD_NAME


def is_early_exit(session) -> bool:
    """Whether an ONNX Runtime session holds an early-exit artifact."""
    return any(o.name == EXIT_TAKEN for o in session.get_outputs())


def run_per_input(session, batches) -> tuple[list[list[np.ndarray]], list[bool]]:
    """Outputs batch by batch, each input run alone (batch 1: the exit decision is per input),
    and whether each input took the exit."""
    names = {i.name for i in session.get_inputs()}
    outputs, taken = [], []
    for batch in batches:
        feeds = {k: v for k, v in batch.items() if k in names}
        rows = len(next(iter(feeds.values())))
        parts = []
        for i in range(rows):
            out, exited = session.run(None, {k: v[i:i + 1] for k, v in feeds.items()})[:2]
            parts.append(out)
            taken.append(bool(exited))
        outputs.append([np.concatenate(parts)])
    return outputs, taken


@dataclass(frozen=True)
class ExitMeasurement:
    """Exit rate over the evaluation inputs and each path's measured latency (batch 1)."""

    exit_rate: float
    n_inputs: int
    exit_path: dict        # LatencyMeasurement.to_dict() with the exit forced
    full_path: dict        # ... with the full network forced
    expected: dict         # rate-weighted median / p10 / p90

    def to_dict(self) -> dict:
        return {"exit_rate": self.exit_rate, "n_inputs": self.n_inputs,
                "exit_path_latency": self.exit_path, "full_path_latency": self.full_path,
                "expected_latency_s": self.expected["median_s"],
                "method": "expected latency = exit_rate x exit-path median + (1 - exit_rate) x "
                          "full-path median; each path timed on the workload's example input "
                          "with the threshold overridden (-inf: always exit, +inf: never)"}


def measure(session, example: dict, taken, timing):
    """Time both paths on ``example`` and weight them by the measured exit rate."""
    from ..backends.ort_runner import LatencyMeasurement, measure_latency

    rate = float(np.mean(taken)) if len(taken) else 0.0
    paths = {}
    for label, value in (("exit", -np.inf), ("full", np.inf)):
        feed = {**example, THRESHOLD_NAME: np.array(value, np.float32)}
        paths[label] = measure_latency(session, feed, timing)
    e, f = paths["exit"], paths["full"]
    expected = LatencyMeasurement(*(rate * getattr(e, k) + (1 - rate) * getattr(f, k)
                                    for k in ("median_s", "p10_s", "p90_s")), f.repeats)
    return ExitMeasurement(rate, len(taken), e.to_dict(), f.to_dict(), expected.to_dict()), expected


def path_models(model: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(exit path, full path) as plain graphs without the If: what cost models can read."""
    graph = model.graph
    branch = next(n for n in graph.node if n.op_type == "If" and n.name == "ee_if")
    attrs = {a.name: a.g for a in branch.attribute}
    out = []
    for key in ("then_branch", "else_branch"):
        sub = attrs[key]
        nodes = [n for n in graph.node if n is not branch] + list(sub.node)
        nodes.append(helper.make_node("Identity", [sub.output[0].name], [branch.output[0]],
                                      name=f"ee_{key}_out"))
        flat = helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output),
                                 list(graph.initializer) + list(sub.initializer))
        out.append(helper.make_model(flat, opset_imports=list(model.opset_import),
                                     ir_version=model.ir_version))
    return out[0], out[1]


def expected_prediction(cost_model, path, shapes: dict, exit_rate: float):
    """(full-path GraphCost, Prediction weighted by the exit rate; peak RAM of the full path)."""
    from dataclasses import replace

    from .layers import describe

    exit_model, full_model = path_models(onnx.load(str(path)))
    exit_graph, full_graph = describe(exit_model, shapes), describe(full_model, shapes)
    e, f = cost_model.predict(exit_graph), cost_model.predict(full_graph)
    return full_graph, replace(f, latency_s=exit_rate * e.latency_s + (1 - exit_rate) * f.latency_s,
                               energy_j=exit_rate * e.energy_j + (1 - exit_rate) * f.energy_j)
