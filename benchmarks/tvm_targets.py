"""TVM on the front of a digits-cnn search: compile time per candidate and target, MetaSchedule
tuning time for the finalists, tuning-database hit rate across the front, and TVM (untuned,
tuned) vs ONNX Runtime latency on this machine.

    .venv/bin/python benchmarks/tvm_targets.py [--trials 24] [--finalists 1] [--tune-trials 16]

Writes results/tvm_targets.json. Uses a fresh cache folder so compile times are real compiles.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _tvm_latency(library, workload, repeat=30) -> float:
    import numpy as np
    import tvm

    from autocompress.backends import tvm_compile

    vm = tvm_compile.load_local(library)
    args = [tvm.runtime.tensor(np.ascontiguousarray(workload.example[n])) for n in workload.input_names]
    vm["main"](*args)
    return float(vm.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat)(*args).median)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--finalists", type=int, default=1, help="front points to tune")
    parser.add_argument("--tune-trials", type=int, default=16, help="MetaSchedule trials per finalist")
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="autocompress-tvm-bench-")
    os.environ["AUTOCOMPRESS_CACHE"] = cache

    from autocompress import api
    from autocompress.backends import ort_runner, tvm_compile, tvm_tuning
    from autocompress.device_profiles import resolve_target
    from autocompress.search.objectives import Budget
    from autocompress.workloads import load_workload

    run = Path(cache) / "run"
    start = time.perf_counter()
    result = api.search(api.SearchConfig(model="digits-cnn", target="host", trials=args.trials,
                                         budget=Budget(max_size_bytes=100_000), out=str(run)))
    search_s = time.perf_counter() - start
    workload = load_workload("digits-cnn")
    shapes = {k: v.shape for k, v in workload.example.items()}
    front = result.document["front"]
    host = resolve_target("host")
    host_target = tvm_compile.resolve_target(host)
    rows = []
    skipped = []
    for point in front:
        path = run / point["artifact"]
        row = {"id": point["id"], "size_bytes": point["size_bytes"], "quality": point["quality"],
               "compile_s": {}}
        try:
            tvm_compile.import_onnx(path, shapes)
        except tvm_compile.TvmError as err:     # e.g. packed INT4 initializers
            skipped.append({"id": point["id"], "plan": point["plan"], "error": str(err)})
            continue
        for name in ("host", "raspberry-pi-4", "jetson-nano"):
            library = tvm_compile.compile_onnx(path, shapes, resolve_target(name), use_tuning=False)
            row["compile_s"][name] = library.compile_s
        mod = tvm_compile.import_onnx(path, shapes)
        row["hits_before"] = tvm_tuning.lookup(mod, host_target)
        session = ort_runner.make_session(path)
        row["ort_latency_s"] = ort_runner.measure_latency(session, workload.example).median_s
        row["tvm_untuned_latency_s"] = _tvm_latency(
            tvm_compile.compile_onnx(path, shapes, host, use_tuning=False).path, workload)
        rows.append(row)
    finalists = sorted(rows, key=lambda r: -r["quality"])[:args.finalists]
    tuning = []
    for row in finalists:
        path = run / next(p["artifact"] for p in front if p["id"] == row["id"])
        report = tvm_tuning.tune(tvm_compile.import_onnx(path, shapes), host_target, args.tune_trials)
        tuning.append({"id": row["id"], **report})
    for row in rows:
        path = run / next(p["artifact"] for p in front if p["id"] == row["id"])
        row["hits_after"] = tvm_tuning.lookup(tvm_compile.import_onnx(path, shapes), host_target)
        library = tvm_compile.compile_onnx(path, shapes, host)
        row["tvm_tuned"] = library.tuned
        row["tvm_tuned_latency_s"] = _tvm_latency(library.path, workload)
    total_tasks = sum(r["hits_after"]["tasks"] for r in rows)
    summary = {
        "workload": "digits-cnn", "search_trials": args.trials, "search_s": search_s,
        "front_points": len(rows),
        "median_compile_s": {t: statistics.median(r["compile_s"][t] for r in rows)
                             for t in rows[0]["compile_s"]} if rows else {},
        "tuning_s": sum(t["seconds"] for t in tuning), "tune_trials_per_finalist": args.tune_trials,
        "cache_hit_rate_before": sum(r["hits_before"]["hits"] for r in rows) / max(1, total_tasks),
        "cache_hit_rate_after": sum(r["hits_after"]["hits"] for r in rows) / max(1, total_tasks),
        "points": rows, "tuning": tuning, "not_compilable": skipped,
    }
    print(f"digits-cnn front: {len(rows)} points from {args.trials} trials ({search_s:.0f} s)")
    for item in skipped:
        print(f"point {item['id']}: TVM cannot compile it: {item['error']}")
    print("median TVM compile time per candidate: " + ", ".join(
        f"{t} {s:.1f} s" for t, s in summary["median_compile_s"].items()))
    print(f"tuning: {summary['tuning_s']:.0f} s for {len(tuning)} finalist(s) x "
          f"{args.tune_trials} trials; failed kernels: {sum(len(t['failed']) for t in tuning)}")
    print(f"tuning-database hit rate over the front: {summary['cache_hit_rate_before']:.0%} before, "
          f"{summary['cache_hit_rate_after']:.0%} after")
    print(f"{'id':>4} {'size kB':>8} {'ORT ms':>8} {'TVM ms':>8} {'TVM tuned ms':>13} {'hits':>7}")
    for r in rows:
        print(f"{r['id']:>4} {r['size_bytes'] / 1e3:>8.1f} {r['ort_latency_s'] * 1e3:>8.3f} "
              f"{r['tvm_untuned_latency_s'] * 1e3:>8.3f} {r['tvm_tuned_latency_s'] * 1e3:>13.3f} "
              f"{r['hits_after']['hits']:>3}/{r['hits_after']['tasks']}")
    out = ROOT / "results" / "tvm_targets.json"
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
