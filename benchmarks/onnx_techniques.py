"""Each ONNX-side weight technique alone, at two or more strengths, on the built-in workloads.

Usage: .venv/bin/python benchmarks/onnx_techniques.py [--model digits-cnn minilm] [--only sparsity]
Every row is ``uniform_plan(knobs, ...)``: each layer offering the setting takes it, nothing
else changes. Prints one markdown row per plan: artifact size, host latency (ONNX Runtime,
median of the pipeline's timing config), quality, and the seconds the export + ONNX stage
took (calibration included). Layers a technique skips are counted with the reason.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from autocompress.api import discover_knobs  # noqa: E402
from autocompress.compression.plan import Plan  # noqa: E402
from autocompress.compression.weights.knobs import torch_weight_knobs, uniform_plan  # noqa: E402
from autocompress.device_profiles import resolve_target  # noqa: E402
from autocompress.pipeline import Evaluator  # noqa: E402
from autocompress.workloads import load_workload  # noqa: E402

ROWS = [
    ("fp16 weights", "w16", {"quant": "w16"}),
    ("weight-only int", "w8 (DequantizeLinear)", {"quant": "w8"}),
    ("weight-only int", "w4 (INT4 blocks)", {"quant": "w4"}),
    ("weight-only int", "w3 (packed)", {"quant": "w3"}),
    ("weight-only int", "w2 (packed)", {"quant": "w2"}),
    ("int8 dynamic", "w8a8", {"quant": "w8a8"}),
    ("int8 static", "w8a8 minmax", {"quant": "w8", "calibration": "minmax"}),
    ("int8 static", "w8a8 percentile", {"quant": "w8", "calibration": "percentile"}),
    ("int8 static", "w8a8 entropy", {"quant": "w8", "calibration": "entropy"}),
    ("int8 static", "w4a8 entropy", {"quant": "w4", "calibration": "entropy"}),
    ("sparsity", "0.5", {"sparsity": 0.5}),
    ("sparsity", "0.9", {"sparsity": 0.9}),
    ("clustering", "64 values", {"clusters": 64}),
    ("clustering", "16 values", {"clusters": 16}),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", nargs="+", default=["digits-cnn", "minilm"])
    parser.add_argument("--only", help="run only rows of this technique")
    args = parser.parse_args()
    torch.set_num_threads(2)
    for name in args.model:
        workload = load_workload(name)
        knobs = discover_knobs(workload)
        with tempfile.TemporaryDirectory() as tmp:
            evaluator = Evaluator(workload, resolve_target("host"), artifact_root=Path(tmp))
            base = evaluator.evaluate(Plan())
            print(f"\n### {name}: uncompressed {base.size_bytes} bytes, "
                  f"{base.host_latency['median_s'] * 1e3:.2f} ms, {base.quality_metric} {base.quality:.4f}\n")
            print("| technique | strength | layers | size (bytes) | size vs float | host latency (ms) "
                  "| quality | ONNX stage (s) |")
            print("|---|---|---|---|---|---|---|---|")
            for technique, strength, settings in ROWS:
                if args.only and args.only not in technique:
                    continue
                plan = uniform_plan(knobs, **settings)
                layers = sum(1 for u in plan.units if u)
                m = evaluator.evaluate(plan)
                print(f"| {technique} | {strength} | {layers} | {m.size_bytes} | "
                      f"{m.size_bytes / base.size_bytes:.3f} | {m.host_latency['median_s'] * 1e3:.2f} | "
                      f"{m.quality:.4f} | {m.timings_s.get('export', float('nan')):.1f} |", flush=True)
        if workload.model is not None:
            reasons: dict[tuple, int] = {}
            for skip in torch_weight_knobs(workload.model)[1]:
                key = (skip.technique, skip.reason.split(":")[0].split(" (")[0])
                reasons[key] = reasons.get(key, 0) + 1
            for (technique, why), count in sorted(reasons.items()):
                print(f"- {technique}: skipped on {count} layer(s) of {name} ({why})")


if __name__ == "__main__":
    main()
