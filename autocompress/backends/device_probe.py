"""`autocompress profile`: measure a device with micro-benchmarks and write a calibrated profile.

The micro-benchmarks are tiny ONNX models: matrix products at several sizes and data types
(fp32 MatMul, fp16 MatMul, int8 MatMulInteger), convolutions, a large elementwise Add for
memory bandwidth, and a one-element Add for the per-kernel overhead. Locally they run in
ONNX Runtime (the runtime that measures host candidates); on a board they are compiled by
TVM for the profile's target and timed over RPC (the runtime that measures board candidates).
Each figure in the written profile is the best rate attained, and its source says so.
"""
from __future__ import annotations

import datetime
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..device_profiles.profile import DeviceProfile, ProfileError

MATMUL_SIZES = ((64, 256, 256), (64, 512, 512), (128, 1024, 1024))   # (M, K, N)
CONV_SIZES = ((32, 32, 28), (64, 64, 14))                            # (Cin, Cout, HxW), 3x3
BANDWIDTH_ELEMENTS = 8 * 1024 * 1024                                   # 32 MiB per fp32 tensor


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "microbench", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _matmul(m: int, k: int, n: int, dtype: str):
    """A MatMul micro-model: (model, inputs, ops per run, data type label)."""
    rng = np.random.default_rng(0)
    if dtype == "int8":
        a = rng.integers(0, 255, (m, k), dtype=np.uint8)
        b = rng.integers(-127, 127, (k, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        ins = [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k]),
               helper.make_tensor_value_info("b", TensorProto.INT8, [k, n])]
        out = helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])
    else:
        np_type, onnx_type = (np.float16, TensorProto.FLOAT16) if dtype == "fp16" else \
            (np.float32, TensorProto.FLOAT)
        a = rng.standard_normal((m, k)).astype(np_type)
        b = rng.standard_normal((k, n)).astype(np_type)
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        ins = [helper.make_tensor_value_info("a", onnx_type, [m, k]),
               helper.make_tensor_value_info("b", onnx_type, [k, n])]
        out = helper.make_tensor_value_info("y", onnx_type, [m, n])
    return _model([node], ins, [out]), {"a": a, "b": b}, 2 * m * k * n


def _conv(cin: int, cout: int, hw: int):
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [cout, cin, 3, 3],
                           rng.standard_normal((cout, cin, 3, 3)).astype(np.float32).ravel())
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, hw, hw])], [w])
    x = rng.standard_normal((1, cin, hw, hw)).astype(np.float32)
    return model, {"x": x}, 2 * cin * cout * 9 * hw * hw


def _add(elements: int):
    rng = np.random.default_rng(0)
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [elements]) for n in ("a", "b")]
    model = _model([helper.make_node("Add", ["a", "b"], ["y"])], ins,
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [elements])])
    data = {n: rng.standard_normal(elements).astype(np.float32) for n in ("a", "b")}
    return model, data, 3 * 4 * elements   # bytes moved: two reads, one write


def benchmarks() -> list[tuple[str, str, Callable]]:
    """(name, what it measures, builder) for every micro-benchmark."""
    out = []
    for dtype in ("fp32", "fp16", "int8"):
        for m, k, n in MATMUL_SIZES:
            out.append((f"matmul_{dtype}_{m}x{k}x{n}", f"ops:{dtype}",
                        lambda m=m, k=k, n=n, d=dtype: _matmul(m, k, n, d)))
    for cin, cout, hw in CONV_SIZES:
        out.append((f"conv3x3_fp32_{cin}x{cout}x{hw}", "ops:fp32", lambda c=cin, o=cout, h=hw: _conv(c, o, h)))
    out.append(("add_bandwidth", "bandwidth", lambda: _add(BANDWIDTH_ELEMENTS)))
    out.append(("add_overhead", "overhead", lambda: _add(1)))
    return out


def ort_timer(threads: int = 2, repeat: int = 20) -> Callable:
    """Times a micro-model on this machine with ONNX Runtime: median seconds per run."""
    from . import ort_runner

    def run(path: Path, inputs: dict) -> float:
        session = ort_runner.make_session(path, threads)
        config = ort_runner.TimingConfig(warmup=3, repeat=repeat, threads=threads)
        return ort_runner.measure_latency(session, inputs, config).median_s

    return run


def rpc_timer(device, profile: DeviceProfile) -> Callable:
    """Times a micro-model on a board: TVM-compiled for the profile's target, run over RPC."""
    from . import tvm_compile

    def run(path: Path, inputs: dict) -> float:
        shapes = {k: v.shape for k, v in inputs.items()}
        library = tvm_compile.compile_onnx(path, shapes, profile, use_tuning=False)
        kind = "cuda" if library.target.kind == "cuda" else "cpu"
        return device.measure(library.path, inputs, list(inputs), kind).median_s

    return run


def measure(timer: Callable, log: Callable[[str], None] = lambda _: None) -> list[dict]:
    """Run every micro-benchmark with ``timer``; a benchmark the runtime cannot run is recorded
    with its error and left out of the figures."""
    results = []
    with tempfile.TemporaryDirectory(prefix="autocompress-profile-") as tmp:
        for name, what, build in benchmarks():
            model, inputs, work = build()
            path = Path(tmp) / f"{name}.onnx"
            onnx.save(model, str(path))
            try:
                seconds = timer(path, inputs)
            except Exception as err:   # e.g. fp16 MatMul without a kernel on this runtime
                results.append({"name": name, "measures": what, "error": str(err).splitlines()[0][:200]})
                log(f"{name}: not runnable ({str(err).splitlines()[0][:80]})")
                continue
            results.append({"name": name, "measures": what, "seconds": seconds, "work": work,
                            "rate": work / seconds})
            log(f"{name}: {seconds * 1e3:.3f} ms")
    return results


def calibrated(base: DeviceProfile, results: list[dict], runtime: str, name: str | None = None) -> DeviceProfile:
    """``base`` with peaks, bandwidth and kernel overhead replaced by the measured figures."""
    ok = [r for r in results if "rate" in r]
    today = datetime.date.today().isoformat()
    peaks = dict(base.peak_ops_per_s)
    sources = dict(base.sources)
    measured_types = []
    for dtype in ("fp32", "fp16", "int8"):
        rates = [r["rate"] for r in ok if r["measures"] == f"ops:{dtype}"]
        if rates:
            peaks[dtype] = max(rates)
            measured_types.append(dtype)
    if "fp32" not in measured_types:
        raise ProfileError("no fp32 micro-benchmark ran; cannot calibrate this device")
    for dtype in ("fp16", "int8"):
        if dtype not in measured_types:
            peaks[dtype] = peaks["fp32"]
    bandwidth = [r["rate"] for r in ok if r["measures"] == "bandwidth"]
    overhead = [r["seconds"] for r in ok if r["measures"] == "overhead"]
    sources["peak_ops_per_s"] = (
        f"measured by `autocompress profile` on {today} with {runtime}: best attained rate over "
        f"MatMul {', '.join('x'.join(map(str, s)) for s in MATMUL_SIZES)} and 3x3 convolutions "
        f"(measured: {', '.join(measured_types)}; others set to the fp32 rate)")
    sources["efficiency"] = "1.0: the peaks above are attained rates, not data-sheet peaks"
    values = {"peak_ops_per_s": peaks, "efficiency": 1.0, "sources": sources,
              "calibration": {"date": today, "runtime": runtime, "microbenchmarks": results}}
    if bandwidth:
        values["memory_bandwidth_bytes_per_s"] = max(bandwidth)
        sources["memory_bandwidth_bytes_per_s"] = (
            f"measured by `autocompress profile` on {today}: elementwise Add of two "
            f"{BANDWIDTH_ELEMENTS * 4 // 2**20} MiB fp32 tensors (3 x bytes / time)")
    if overhead:
        values["kernel_overhead_s"] = min(overhead)
        sources["kernel_overhead_s"] = (f"measured by `autocompress profile` on {today}: one "
                                        f"single-element Add, whole run")
    if name:
        values["name"] = name
    return replace(base, **values)


def write_profile(profile: DeviceProfile, path: Path | str) -> Path:
    """Validate (by reloading through the schema) and write atomically."""
    data = profile.to_dict()
    DeviceProfile.from_dict(json.loads(json.dumps(data)), str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path
