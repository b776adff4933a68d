"""TVM on the fronts of a digits-cnn and a MiniLM search, for every device profile.

For each workload: a short search for host (finalize off), then for EVERY front point and
each of the five targets the command a user runs,
``autocompress export RUN --pick N --format tvm --target T`` (in this process, through the
command line's own entry point), recording success or its one-line error, and the TVM compile
time from the export's record. On host: ONNX Runtime vs the untuned TVM library the export
wrote, then MetaSchedule tuning of the finalists (the best-quality compressed points) with a
small trial budget, the tuning database's hit rate over the front, and tuned TVM latency.

    .venv/bin/python benchmarks/tvm_targets.py [--workloads digits-cnn,minilm]
        [--digits-trials 16] [--minilm-trials 8] [--tune digits-cnn] [--finalists 1]
        [--tune-trials 8] [--rpc minilm] [--rpc-trials 4]
    .venv/bin/python benchmarks/tvm_targets.py --report     # the figures of the last run again

Tuning runs only for the workloads named by ``--tune`` (after every export, so it cannot
change a compile time): ``tvm_tuning.tune`` gives every untuned kernel at least one
MetaSchedule trial, each in fresh builder and runner processes: 10 s to 3 minutes per kernel
on the 2 shared cores here, depending on what else runs, and a digits-cnn point has about 40.
Writes results/tvm_targets.json. Uses a fresh cache folder, so every compile is a real compile
(and the searches pay for their sensitivity analyses).
"""
from __future__ import annotations

import argparse
import contextlib
import io
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

TARGETS = ("host", "raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-orin-nano")
SHORT = {"host": "host", "raspberry-pi-4": "pi-4", "raspberry-pi-5": "pi-5",
         "jetson-nano": "nano", "jetson-orin-nano": "orin-nano"}   # table headers
BUDGETS = {"digits-cnn": 100_000, "minilm": None}   # bytes; MiniLM: no budget


def search(model: str, trials: int, run: Path) -> tuple[dict, float]:
    from autocompress import api
    from autocompress.search.objectives import Budget

    start = time.perf_counter()
    budget = Budget(max_size_bytes=BUDGETS[model]) if BUDGETS[model] else Budget()
    result = api.search(api.SearchConfig(model=model, target="host", trials=trials,
                                         budget=budget, finalize_s=0, out=str(run)))
    return result.document, time.perf_counter() - start


def export_tvm(run: Path, pick: int, target: str) -> dict:
    """``autocompress export RUN --pick N --format tvm --target T``: exit code, its one-line
    error, or the library's record from export.json."""
    from autocompress.cli import main

    out = run / "export" / f"{pick}-tvm-{target}"
    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["export", str(run), "--pick", str(pick), "--format", "tvm",
                     "--target", target, "--out", str(out)])
    row = {"ok": code == 0, "exit_code": code, "export_s": time.perf_counter() - start}
    if code != 0:
        lines = err.getvalue().strip().splitlines()
        row["error"] = lines[-1] if lines else ""
        return row
    tvm = json.loads((out / "export.json").read_text())["tvm"]
    row.update(compile_s=tvm["compile_s"], cached=tvm["cached"], machine=tvm["machine"],
               kind=tvm["kind"], check=tvm["check"], library=str(out / tvm["library"]))
    return row


def tvm_latency(library: str, workload, repeat: int = 30) -> float:
    import numpy as np
    import tvm

    from autocompress.backends import tvm_compile

    vm = tvm_compile.load_local(library)
    args = [tvm.runtime.tensor(np.ascontiguousarray(workload.example[n]))
            for n in workload.input_names]
    vm["main"](*args)
    return float(vm.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat)(*args).median)


def ort_latency(path: Path, workload) -> float:
    from autocompress.backends import ort_runner

    return ort_runner.measure_latency(ort_runner.make_session(path), workload.example).median_s


def point_rows(run: Path, front: list, workload) -> list:
    """Every front point exported for every target; host latencies where the export worked."""
    rows = []
    for point in front:
        row = {"id": point["id"], "size_bytes": point["size_bytes"], "quality": point["quality"],
               "uncompressed": not point["plan"]["units"], "exports": {}}
        for target in TARGETS:
            row["exports"][target] = export_tvm(run, point["id"], target)
            print(f"  point {point['id']} -> {target}: " + _export_words(row["exports"][target]),
                  flush=True)
        row["ort_latency_s"] = ort_latency(run / point["artifact"], workload)
        host = row["exports"]["host"]
        row["tvm_untuned_latency_s"] = tvm_latency(host["library"], workload) if host["ok"] else None
        for export in row["exports"].values():
            export.pop("library", None)    # a path in the benchmark's temporary folder
        rows.append(row)
    return rows


def _export_words(row: dict) -> str:
    return f"ok, compile {row['compile_s']:.1f} s" if row["ok"] else f"FAILED: {row['error']}"


def rpc_search(model: str, trials: int, run: Path) -> dict:
    """``autocompress search --model M --target host --rpc-tracker ... --cost measured``, as a
    user types it, against TVM's tracker and one RPC server on loopback
    (``tvm_rpc.local_farm``): every candidate compiled with TVM, uploaded and timed on the
    board. Runs after the workload's first search, so its sensitivity analysis is cached."""
    import optuna

    from autocompress.backends import tvm_rpc
    from autocompress.cli import main

    start = time.perf_counter()
    with tvm_rpc.local_farm(1) as device:
        code = main(["search", "--model", model, "--target", "host", "--trials", str(trials),
                     "--rpc-tracker", f"{tvm_rpc.LOOPBACK}:{device.tracker_port}",
                     "--rpc-key", device.key, "--cost", "measured", "--finalize", "0",
                     "--out", str(run)])
    seconds = time.perf_counter() - start
    if code != 0:
        return {"exit_code": code, "seconds": seconds}
    document = json.loads((run / "pareto.json").read_text())
    study = optuna.load_study(study_name="autocompress", storage=document["study"]["storage"])
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    points = []
    for point in document["front"]:
        latency = point["provenance"]["latency_s"]
        points.append({"id": point["id"], "size_bytes": point["size_bytes"],
                       "quality": point["quality"], "latency_s": point["latency_s"],
                       "kind": latency["kind"], "rpc": latency.get("rpc"),
                       "repeats": latency.get("repeats"),
                       "tvm_compile_s": point["timings_s"].get("tvm_compile"),
                       "device_s": point["timings_s"].get("device")})
    return {"exit_code": code, "seconds": seconds, "trials": len(states),
            "complete": states.count("COMPLETE"), "failed": states.count("FAIL"),
            "points": points}


def tune_front(run: Path, front: list, rows: list, workload, finalists: int,
               trials: int) -> list:
    """Tune the finalists for host, then read every point's hit rate and tuned latency."""
    from autocompress.backends import tvm_compile, tvm_tuning
    from autocompress.device_profiles import resolve_target

    host = resolve_target("host")
    target = tvm_compile.resolve_target(host)
    shapes = {k: v.shape for k, v in workload.example.items()}
    paths = {p["id"]: run / p["artifact"] for p in front}
    compiled = [r for r in rows if r["exports"]["host"]["ok"]]
    for row in compiled:
        row["hits_before"] = tvm_tuning.lookup(tvm_compile.import_onnx(paths[row["id"]], shapes),
                                               target)
    chosen = sorted(compiled, key=lambda r: (r["uncompressed"], -r["quality"]))[:finalists]
    tuning = []
    for row in chosen:
        print(f"  tuning point {row['id']} ({row['hits_before']['tasks']} kernels, "
              f"{trials} trials asked)", flush=True)
        report = tvm_tuning.tune(tvm_compile.import_onnx(paths[row["id"]], shapes), target, trials)
        tuning.append({"id": row["id"], **report})
    for row in compiled if tuning else []:
        row["hits_after"] = tvm_tuning.lookup(tvm_compile.import_onnx(paths[row["id"]], shapes),
                                              target)
        library = tvm_compile.compile_onnx(paths[row["id"]], shapes, host)
        row["tvm_tuned"] = library.tuned
        row["tvm_tuned_latency_s"] = tvm_latency(str(library.path), workload)
    return tuning


def summarise(model: str, trials: int, search_s: float, rows: list, tuning: list) -> dict:
    exports = [(r["id"], t, e) for r in rows for t, e in r["exports"].items()]
    compiled = [r for r in rows if "hits_before" in r]
    tasks = sum(r["hits_before"]["tasks"] for r in compiled)
    return {
        "workload": model, "search_trials": trials, "budget_bytes": BUDGETS[model],
        "search_s": search_s, "front_points": len(rows),
        "exports_ok": sum(e["ok"] for _, _, e in exports), "exports": len(exports),
        "failures": [{"id": i, "target": t, "error": e["error"]}
                     for i, t, e in exports if not e["ok"]],
        "median_compile_s": {t: statistics.median(e["compile_s"] for _, tt, e in exports
                                                  if tt == t and e["ok"])
                             for t in TARGETS if any(e["ok"] for _, tt, e in exports if tt == t)},
        "tvm_untuned_over_ort": _ratio_range(rows, "tvm_untuned_latency_s"),
        "tvm_tuned_over_ort": _ratio_range(rows, "tvm_tuned_latency_s"),
        "tuning_s": sum(t["seconds"] for t in tuning),
        "tuned_points": [t["id"] for t in tuning],
        "failed_kernels": sum(len(t["failed"]) for t in tuning),
        "cache_hit_rate_before": (sum(r["hits_before"]["hits"] for r in compiled) / max(1, tasks)
                                  if tuning else None),
        "cache_hit_rate_after": (sum(r["hits_after"]["hits"] for r in compiled) / max(1, tasks)
                                 if tuning else None),
        "points": rows, "tuning": tuning,
    }


def _ratio_range(rows: list, key: str) -> list | None:
    ratios = [r[key] / r["ort_latency_s"] for r in rows if r.get(key)]
    return [min(ratios), max(ratios)] if ratios else None


def report(summary: dict) -> None:
    name = summary["workload"]
    if summary.get("carried_over"):
        print(f"\n{name}: carried over from the previous run of this benchmark (not rerun)")
    print(f"\n{name}: {summary['front_points']}-point front from {summary['search_trials']} "
          f"trials ({summary['search_s']:.0f} s); TVM exports: {summary['exports_ok']} of "
          f"{summary['exports']} succeeded")
    for item in summary["failures"]:
        print(f"  point {item['id']} -> {item['target']}: {item['error']}")
    print(f"{name} median TVM compile time per point: " + ", ".join(
        f"{t} {s:.1f} s" for t, s in summary["median_compile_s"].items()))
    print(f"{name} median wall time of the export command (re-measured quality, host check "
          "included): " + ", ".join(
              f"{t} {statistics.median(r['exports'][t]['export_s'] for r in summary['points']):.1f} s"
              for t in TARGETS))
    for key, words in (("tvm_untuned_over_ort", "untuned"), ("tvm_tuned_over_ort", "tuned")):
        if summary[key]:
            low, high = summary[key]
            print(f"{name} on host: {words} TVM takes {low:.1f}-{high:.1f}x ONNX Runtime's latency")
    rpc = summary.get("rpc")
    if rpc and rpc.get("exit_code") == 0:
        measured = sum(p["kind"] == "measured" for p in rpc["points"])
        print(f"{name} over TVM RPC on loopback (search --rpc-tracker --cost measured): "
              f"{rpc['complete']} of {rpc['trials']} trials complete, {rpc['failed']} failed, "
              f"{rpc['seconds']:.0f} s; {measured} of {len(rpc['points'])} front points measured "
              "on the board: " + ", ".join(
                  f"{p['id']}: {p['size_bytes'] / 1e6:.1f} MB, {p['quality']:.4f}, "
                  f"{p['latency_s'] * 1e3:.1f} ms ({p['repeats']} runs)" for p in rpc["points"]))
    elif rpc:
        print(f"{name} over TVM RPC: the search exited with {rpc['exit_code']}")
    if summary["tuning"]:
        print(f"{name} tuning: {summary['tuning_s']:.0f} s for point(s) "
              f"{', '.join(map(str, summary['tuned_points']))}; failed kernels: "
              f"{summary['failed_kernels']}; database hit rate over the front "
              f"{summary['cache_hit_rate_before']:.0%} before, "
              f"{summary['cache_hit_rate_after']:.0%} after")
    print(f"{'id':>4} {'size kB':>9} {'quality':>8} " + " ".join(f"{SHORT[t]:>10}" for t in TARGETS)
          + f" {'ORT ms':>8} {'TVM ms':>8} {'tuned ms':>9} {'hits':>7}")
    for r in summary["points"]:
        cells = " ".join(f"{_compile_cell(e):>10}" for e in r["exports"].values())
        print(f"{r['id']:>4} {r['size_bytes'] / 1e3:>9.1f} {r['quality']:>8.4f} {cells} "
              f"{r['ort_latency_s'] * 1e3:>8.3f} {_ms(r['tvm_untuned_latency_s']):>8} "
              f"{_ms(r.get('tvm_tuned_latency_s')):>9} {_hits(r.get('hits_after')):>7}")


def _compile_cell(export: dict) -> str:
    return f"{export['compile_s']:.1f} s" if export["ok"] else "FAILED"


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _hits(hits) -> str:
    return "-" if not hits else f"{hits['hits']}/{hits['tasks']}"


def _carry_workloads(results: dict, out: Path, rerun: list[str]) -> None:
    """Workloads not run now keep their figures from the previous results file, marked so
    (``--workloads minilm`` does not drop digits-cnn's)."""
    if not out.exists():
        return
    previous = json.loads(out.read_text())
    for model, summary in previous.get("workloads", {}).items():
        if model not in rerun:
            results["workloads"][model] = {**summary, "carried_over": True}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", default="digits-cnn,minilm")
    parser.add_argument("--digits-trials", type=int, default=16)
    parser.add_argument("--minilm-trials", type=int, default=8)
    parser.add_argument("--tune", default="", help="workloads whose finalists are tuned for host, "
                        "after every export (e.g. digits-cnn); default: none")
    parser.add_argument("--finalists", type=int, default=1, help="front points to tune, per workload")
    parser.add_argument("--tune-trials", type=int, default=8,
                        help="MetaSchedule trials per finalist (at least one per kernel)")
    parser.add_argument("--rpc", default="", help="workloads also searched over TVM RPC on "
                        "loopback, every candidate measured on the board (e.g. minilm)")
    parser.add_argument("--rpc-trials", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "results" / "tvm_targets.json"))
    parser.add_argument("--report", action="store_true", help="print the figures of --out again")
    args = parser.parse_args()
    if args.report:
        for summary in json.loads(Path(args.out).read_text())["workloads"].values():
            report(summary)
        return
    cache = tempfile.mkdtemp(prefix="autocompress-tvm-bench-")
    os.environ["AUTOCOMPRESS_CACHE"] = cache

    from autocompress.workloads import load_workload

    trials = {"digits-cnn": args.digits_trials, "minilm": args.minilm_trials}
    tuned = [m for m in args.tune.split(",") if m]
    rpc_models = [m for m in args.rpc.split(",") if m]
    results = {"targets": list(TARGETS), "tuned_workloads": tuned, "finalists": args.finalists,
               "tune_trials_per_finalist": args.tune_trials, "cores": os.cpu_count(),
               "workloads": {}}
    out = Path(args.out)
    _carry_workloads(results, out, args.workloads.split(","))
    fronts = {}
    for model in args.workloads.split(","):
        run = Path(cache) / f"run-{model}"
        print(f"{model}: searching ({trials[model]} trials)", flush=True)
        document, search_s = search(model, trials[model], run)
        rows = point_rows(run, document["front"], load_workload(model))
        fronts[model] = (run, document["front"], rows)
        results["workloads"][model] = summarise(model, trials[model], search_s, rows, [])
        if model in rpc_models:
            print(f"{model}: searching over TVM RPC ({args.rpc_trials} trials)", flush=True)
            results["workloads"][model]["rpc"] = rpc_search(model, args.rpc_trials,
                                                            Path(cache) / f"rpc-{model}")
        out.write_text(json.dumps(results, indent=2, default=str) + "\n")   # partial results
    for model in tuned:
        run, front, rows = fronts[model]
        tuning = tune_front(run, front, rows, load_workload(model), args.finalists,
                            args.tune_trials)
        summary = results["workloads"][model]
        results["workloads"][model] = {**summarise(model, trials[model], summary["search_s"],
                                                   rows, tuning),
                                       **({"rpc": summary["rpc"]} if "rpc" in summary else {})}
    for summary in results["workloads"].values():
        report(summary)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
