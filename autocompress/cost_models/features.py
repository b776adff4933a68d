"""What the learned correction sees of a graph: roofline seconds and kernel counts by group.

A graph becomes a small vector of named features, each an analytical quantity on the
device's profile: per group of MAC layers (operator family x data type), the summed
roofline time and the number of kernels; per class of other kernels, the summed memory
time and the count. The calibrated latency is a non-negative combination of these, so
each coefficient reads as "this group runs at 1/x of the roofline" or "costs x seconds
per launch". Samples store these vectors (not the graphs), so a calibration file can be
refitted without the artifacts; ``FEATURE_VERSION`` changes when their meaning does.
"""
from __future__ import annotations

from .layers import KERNEL_CLASSES, GraphCost
from .roofline import layer_roofline_s, memory_s

FEATURE_VERSION = 3
MAC_GROUPS = ("conv-fp32", "conv-int8", "conv-dyn8", "dwconv-fp32", "dwconv-int8",
              "dwconv-dyn8", "matmul-fp32", "matmul-int8", "matmul-dyn8", "gather")
DYNAMIC_INT8 = ("ConvInteger", "MatMulInteger")
"""ORT's dynamic int8 kernels run apart from the static QDQ-fused ones (QLinearConv...): on a
CPU without VNNI a ConvInteger is several times slower than its float Conv."""
LATENCY_FEATURES = (("run",)
                    + tuple(f"{g}:s" for g in MAC_GROUPS) + tuple(f"{g}:n" for g in MAC_GROUPS)
                    + tuple(f"{k}:s" for k in KERNEL_CLASSES)
                    + tuple(f"{k}:n" for k in KERNEL_CLASSES))
RAM_FEATURES = ("weights", "activations", "stored", "folded", "nodes", "session")


def group(layer) -> str:
    if layer.op == "Gather":
        return "gather" if layer.weight_bytes else None   # Shape->Gather is shape arithmetic
    family = "matmul" if layer.op in ("MatMul", "Gemm", "MatMulInteger") else (
        "dwconv" if layer.grouped else "conv")
    if layer.op in DYNAMIC_INT8:
        return f"{family}-dyn8"
    return f"{family}-{'int8' if layer.dtype == 'int8' else 'fp32'}"


def latency_features(profile, graph: GraphCost) -> dict[str, float]:
    """Roofline seconds and kernel counts per group (plus ``run``: one per inference)."""
    f = dict.fromkeys(LATENCY_FEATURES, 0.0)
    f["run"] = 1.0
    for layer in graph.layers:
        name = group(layer)
        if name is None:
            f["shape:n"] += 1
            continue
        f[f"{name}:s"] += layer_roofline_s(profile, layer)
        f[f"{name}:n"] += 1
    for kernel in graph.kernels:
        f[f"{kernel.kind}:s"] += memory_s(profile, kernel.bytes)
        f[f"{kernel.kind}:n"] += 1
    return f


def ram_features(graph: GraphCost) -> dict[str, float]:
    """Bytes the runtime holds: weights as float after unpacking, live activations at the
    liveness peak, the file's initializers (held while loading), every tensor constant
    folding materialises (unpacking chains of int64 intermediates live until the pass
    ends), operators (per-node structures) and one session."""
    return {"weights": graph.weight_bytes, "activations": graph.peak_activation_bytes,
            "stored": graph.stored_bytes, "folded": graph.folded_bytes,
            "nodes": float(graph.n_nodes), "session": 1.0}


def prior_latency_weights(profile) -> dict[str, float]:
    """The coefficients that make the feature combination equal the plain roofline."""
    w = {name: 1.0 for name in LATENCY_FEATURES if name.endswith(":s")}
    w.update({name: profile.kernel_overhead_s for name in LATENCY_FEATURES if name.endswith(":n")})
    w["run"] = 0.0
    w["shape:n"] = profile.kernel_overhead_s
    return w
