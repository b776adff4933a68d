"""Front points against ONNX Runtime's own uniform int8, timed side by side on an idle machine.

Usage: .venv/bin/python benchmarks/int8_head_to_head.py RUN [--min-quality 0.99] [--rounds 5]

RUN is a finished search's run folder (e.g. the `ours` MiniLM search that
benchmarks/search_quality.py leaves under /tmp/search-quality-*/). The uncompressed model is
exported again and quantized with ``onnxruntime.quantization.quantize_dynamic`` (int8 weights,
per tensor: the tool's default); every front point with quality >= --min-quality and a file
no larger than that is timed against it, alternating sessions round by round (2 threads,
batch 1, the workload's example), so both see the same machine. Prints a Markdown table and
writes results/int8_head_to_head.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from autocompress import api
    from autocompress.backends import ort_runner
    from autocompress.compression.apply import apply_plan
    from autocompress.compression.plan import Plan

    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--min-quality", type=float, default=0.99)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "results" / "int8_head_to_head.json"))
    args = parser.parse_args()
    run = Path(args.run)
    document = json.loads((run / "pareto.json").read_text())
    workload = api.load_workload(document["config"]["model"])
    tmp = Path(tempfile.mkdtemp())
    fp32 = apply_plan(Plan(), workload, tmp / "fp32.onnx").path
    ort_int8 = tmp / "ort-int8.onnx"
    quantize_dynamic(str(fp32), str(ort_int8), weight_type=QuantType.QInt8)
    limit = ort_int8.stat().st_size
    from autocompress.report.table import plan_summary

    candidates = {"ort-int8-dynamic": ort_int8}
    plans = {"ort-int8-dynamic": "onnxruntime quantize_dynamic, int8 per tensor"}
    for p in document["front"]:
        if p["quality"] >= args.min_quality and p["size_bytes"] <= limit:
            candidates[f"trial {p['id']}"] = run / p["artifact"]
            plans[f"trial {p['id']}"] = plan_summary(p["plan"])
    timing = ort_runner.TimingConfig(warmup=20, repeat=200, threads=2)
    sessions = {name: ort_runner.make_session(path, timing.threads)
                for name, path in candidates.items()}
    quality = {name: workload.score(ort_runner.run_batches(s, workload.evaluation)).value
               for name, s in sessions.items()}
    medians = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, session in sessions.items():
            medians[name].append(ort_runner.measure_latency(session, workload.example,
                                                            timing).median_s)
    ref = statistics.median(medians["ort-int8-dynamic"])
    rows = []
    for name, path in candidates.items():
        latency = statistics.median(medians[name])
        rows.append({"candidate": name, "plan": plans[name], "quality": quality[name],
                     "size_bytes": Path(path).stat().st_size, "host_latency_s": latency,
                     "latency_vs_ort_int8": latency / ref, "round_medians_s": medians[name]})
    print(f"{workload.name}: front points with quality >= {args.min_quality} and size <= "
          f"ONNX Runtime int8 ({limit / 1e6:.2f} MB), timed side by side "
          f"({args.rounds} rounds x {timing.repeat} runs, {timing.threads} threads)")
    print("| candidate | plan | quality | size | host latency (median of rounds) | vs ORT int8 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['candidate']} | {r['plan']} | {r['quality']:.4f} | {r['size_bytes'] / 1e6:.2f} MB | "
              f"{r['host_latency_s'] * 1e3:.2f} ms | {r['latency_vs_ort_int8']:.3f}x |")
    Path(args.out).write_text(json.dumps({"run": str(run), "workload": workload.name,
                                          "min_quality": args.min_quality, "rows": rows},
                                         indent=1) + "\n")


if __name__ == "__main__":
    main()
