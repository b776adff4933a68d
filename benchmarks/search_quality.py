"""Search quality against the obvious baselines, on the built-in workloads (target: host).

Usage: .venv/bin/python benchmarks/search_quality.py [--workloads digits-cnn,minilm]
       [--trials 100] [--long 300] [--seeds 3] [--minilm-trials 40] [--parallel 2]

For each workload:
1. ONNX Runtime's own uniform int8 (quantize_dynamic; quantize_static, QDQ, MinMax) on the
   fp32 export, and uniform pruning at every ratio: quality, size, host latency.
2. Searches with the same trial budget: ours (TPE + anchors + sensitivity seeding/shaping +
   multi-fidelity), random search and Optuna's default NSGA-II (no anchors, no sensitivity,
   no multi-fidelity, the unshaped space). Hypervolume after every trial, all against the
   same reference (search/hypervolume.py: normalised by the uncompressed model measured here).
3. Goals: digits-cnn >= 20x smaller at <= 1 point accuracy drop; MiniLM: a point with cosine
   >= 0.99 no larger and no slower (host) than ONNX Runtime's uniform int8; 95% of the
   300-trial hypervolume within 60 trials; at 100 trials >= 1.2x random search.

``--parallel 2`` runs two searches side by side with one thread each (latencies are then
one-thread latencies, for every run and baseline alike). Writes results/search_quality.json,
results/search_quality.md and results/search_quality_hv.png.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "results"

VARIANTS = {
    "ours": {"sampler": "tpe", "anchors": True, "sensitivity": True, "multi_fidelity": True},
    "random": {"sampler": "random", "anchors": False, "sensitivity": False,
               "multi_fidelity": False},
    "nsga2": {"sampler": "nsga2", "anchors": False, "sensitivity": False,
              "multi_fidelity": False},
}


def _threads(n: int) -> None:
    os.environ["AUTOCOMPRESS_THREADS"] = str(n)
    import torch

    torch.set_num_threads(n)


def run_search(job: dict) -> dict:
    """One search (in its own process): the trials' objective values in completion order."""
    _threads(job["threads"])
    import optuna

    from autocompress import api

    out = Path(job["dir"]) / f"{job['workload']}-{job['variant']}-{job['seed']}"
    config = api.SearchConfig(model=job["workload"], target="host", trials=job["trials"],
                              seed=job["seed"], out=str(out), **VARIANTS[job["variant"]])
    start = time.perf_counter()
    try:
        api.search(config)
    except api.InfeasibleError:
        pass
    return read_run(job, out, time.perf_counter() - start)


def read_run(job: dict, out: Path, wall: float | None = None) -> dict:
    """A finished search's trials in completion order (``wall`` None: from the timestamps)."""
    import optuna

    from autocompress import api

    study = optuna.load_study(study_name=api.STUDY_NAME,
                              storage=f"sqlite:///{(out / 'study.db').resolve()}")
    done = sorted((t for t in study.trials if t.datetime_complete),
                  key=lambda t: (t.datetime_complete, t.number))
    if wall is None:
        wall = (done[-1].datetime_complete - min(t.datetime_start for t in done)).total_seconds()
    points = [{"number": t.number, "values": list(t.values) if t.values else None,
               "fidelity": t.user_attrs.get("metrics", {}).get("fidelity"),
               "plan": t.user_attrs.get("plan")} for t in done]
    return {**job, "wall_s": wall, "trials_per_minute": 60 * len(done) / wall, "points": points,
            "run_dir": str(out)}


def baselines(workload_name: str, threads: int) -> dict:
    """Uncompressed, ONNX Runtime uniform int8 (dynamic, static) and uniform pruning grid."""
    _threads(threads)
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    from autocompress import api
    from autocompress.backends import ort_runner
    from autocompress.compression.plan import Plan
    from autocompress.device_profiles import resolve_target
    from autocompress.pipeline import Evaluator

    workload = api.load_workload(workload_name)
    tmp = Path(tempfile.mkdtemp())
    evaluator = Evaluator(workload, resolve_target("host"), artifact_root=tmp)
    rows = {}
    base = evaluator.evaluate(Plan())
    rows["uncompressed"] = _row(base.quality, base.size_bytes, base.host_latency["median_s"])
    fp32 = evaluator.artifact_path(Plan())

    class Reader(CalibrationDataReader):
        def __init__(self):
            names = set(workload.input_names)
            self.items = iter([{k: v for k, v in b.items() if k in names}
                               for b in workload.calibration])

        def get_next(self):
            return next(self.items, None)

    quantized = {"ort-int8-dynamic": tmp / "dyn.onnx", "ort-int8-static": tmp / "static.onnx"}
    quantize_dynamic(str(fp32), str(quantized["ort-int8-dynamic"]), weight_type=QuantType.QInt8)
    quantize_static(str(fp32), str(quantized["ort-int8-static"]), Reader(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    for name, path in quantized.items():
        session = ort_runner.make_session(path, threads)
        quality = workload.score(ort_runner.run_batches(session, workload.evaluation)).value
        latency = ort_runner.measure_latency(session, workload.example,
                                             ort_runner.TimingConfig(threads=threads))
        rows[name] = _row(quality, path.stat().st_size, latency.median_s)
    knobs = api.discover_knobs(workload)
    prunable = [k for k in knobs if k.name == "prune_ratio"]
    for ratio in (prunable[0].choices[1:] if prunable else ()):
        plan = Plan({k.unit: {"prune_ratio": ratio} for k in prunable})
        m = evaluator.evaluate(plan)
        rows[f"uniform prune {ratio}"] = _row(m.quality, m.size_bytes, m.host_latency["median_s"])
    return rows


def _row(quality: float, size: int, latency: float) -> dict:
    return {"quality": quality, "size_bytes": int(size), "host_latency_s": latency}


def analyse(workload: str, rows: dict, runs: list[dict], trials: int, long: int) -> dict:
    from autocompress.search import hypervolume

    base = rows["uncompressed"]
    scale = hypervolume.Scale(base["quality"], base["host_latency_s"], base["size_bytes"])
    curves = {}
    for run in runs:
        values = [p["values"] if p["values"] and p["fidelity"] != "proxy" else None
                  for p in run["points"]]
        curves[(run["variant"], run["seed"])] = hypervolume.history(values, scale)
    summary = {}
    for variant in VARIANTS:
        at = [c[trials - 1] for (v, _), c in curves.items() if v == variant and len(c) >= trials]
        if at:
            summary[variant] = {"hv_at_trials": at, "median": statistics.median(at),
                                "min": min(at), "max": max(at)}
    goals = {}
    if "ours" in summary and "random" in summary:
        random_hv = summary["random"]["median"]
        goals["hv_vs_random_at_trials"] = (summary["ours"]["median"] / random_hv if random_hv
                                           else "random search has no point in the reference box")
    long_curve = curves.get(("ours", 0))
    if long_curve and len(long_curve) >= long >= 60:
        final = long_curve[long - 1]
        reached = next((i + 1 for i, v in enumerate(long_curve) if v >= 0.95 * final), None)
        goals["trials_to_95pct_of_long_run"] = reached
        goals["hv_at_60_over_final"] = long_curve[59] / final if final else None
    ours_points = [p for r in runs if r["variant"] == "ours" for p in r["points"]
                   if p["values"] and p["fidelity"] != "proxy"]
    if workload == "digits-cnn":
        ok = [p for p in ours_points if p["values"][0] >= base["quality"] - 0.01]
        best = min(ok, key=lambda p: p["values"][2], default=None)
        goals["smallest_within_1pt"] = best and {
            "quality": best["values"][0], "size_bytes": best["values"][2],
            "times_smaller": base["size_bytes"] / best["values"][2], "plan": best["plan"]}
    if workload == "minilm":
        ref = rows["ort-int8-dynamic"]
        ok = [p for p in ours_points if p["values"][0] >= 0.99
              and p["values"][2] <= ref["size_bytes"] and p["values"][1] <= ref["host_latency_s"]]
        best = max(ok, key=lambda p: p["values"][0], default=None)
        near = max((p for p in ours_points if p["values"][2] <= ref["size_bytes"]),
                   key=lambda p: p["values"][0], default=None)
        goals["cosine_099_within_ort_int8"] = best and {
            "quality": best["values"][0], "size_bytes": best["values"][2],
            "host_latency_s": best["values"][1], "plan": best["plan"]}
        goals["best_no_larger_than_ort_int8"] = near and {
            "quality": near["values"][0], "size_bytes": near["values"][2],
            "host_latency_s": near["values"][1]}
    speed = {v: statistics.median(r["trials_per_minute"] for r in runs if r["variant"] == v)
             for v in VARIANTS if any(r["variant"] == v for r in runs)}
    return {"workload": workload, "baselines": rows, "scale": scale.to_dict(),
            "hypervolume": summary, "goals": goals, "trials_per_minute": speed,
            "curves": {f"{v}-{s}": c for (v, s), c in curves.items()}}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    colors = {"ours": "tab:blue", "random": "tab:orange", "nsga2": "tab:green"}
    for ax, result in zip(axes[0], results):
        for name, curve in sorted(result["curves"].items()):
            variant = name.rsplit("-", 1)[0]
            ax.plot(range(1, len(curve) + 1), curve, color=colors[variant], alpha=0.8,
                    label=variant if name.endswith("-0") else None)
        ax.set_title(f"{result['workload']} (host)")
        ax.set_xlabel("trials")
        ax.set_ylabel("hypervolume (normalised)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(results: list[dict], args) -> str:
    lines = [f"From `benchmarks/search_quality.py` (target host, {args.parallel} search(es) side "
             f"by side, {args.threads} thread(s) each):", ""]
    for r in results:
        run = r.get("run_args") or vars(args)
        budget = run["minilm_trials"] if r["workload"] == "minilm" else run["trials"]
        lines += [f"**{r['workload']}** ({budget} trials per search; ours seed 0 ran "
                  f"{budget if r['workload'] == 'minilm' else run['long']})", "",
                  "| method | quality | size | host latency |", "|---|---|---|---|"]
        for name, row in r["baselines"].items():
            lines.append(f"| {name} | {row['quality']:.4f} | {row['size_bytes'] / 1e6:.3f} MB | "
                         f"{row['host_latency_s'] * 1e3:.2f} ms |")
        lines += ["", "| search | hypervolume at budget (median, min-max over seeds) | trials/min |",
                  "|---|---|---|"]
        for v, hv in r["hypervolume"].items():
            lines.append(f"| {v} ({len(hv['hv_at_trials'])} seeds) | {hv['median']:.4f} "
                         f"({hv['min']:.4f}-{hv['max']:.4f}) | {r['trials_per_minute'][v]:.1f} |")
        lines += ["", "Goals: " + json.dumps({k: v if not isinstance(v, dict) else
                                                {a: b for a, b in v.items() if a != "plan"}
                                                for k, v in r["goals"].items()}), ""]
    return "\n".join(lines)


def write(results: list[dict], args, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "search_quality.json").write_text(json.dumps(
        {"args": vars(args), "cpus": os.cpu_count(), "results": results}, indent=1) + "\n")
    (out / "search_quality.md").write_text(markdown(results, args) + "\n")
    plot(results, out / "search_quality_hv.png")


def render(args) -> None:
    """Merge separate runs (e.g. one per workload) into one set of result files; where two
    files hold the same workload, the later file's run is kept (in the first one's place)."""
    docs = [json.loads(Path(p).read_text()) for p in args.render]
    first = argparse.Namespace(**docs[0]["args"])
    merged = {}
    for doc in docs:
        for r in doc["results"]:
            r["run_args"] = doc["args"]
            if r["hypervolume"].get("random", {}).get("median") == 0:   # runs before the fix
                r["goals"]["hv_vs_random_at_trials"] = \
                    "random search has no point in the reference box"
            merged[r["workload"]] = r
    write(list(merged.values()), first, Path(args.out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", default="digits-cnn,minilm")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--long", type=int, default=300, help="trials of ours, seed 0 (digits)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--nsga2-seeds", type=int, default=1)
    parser.add_argument("--minilm-trials", type=int, default=40)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="which searches to run (ours,random,nsga2)")
    parser.add_argument("--reuse", metavar="DIR",
                        help="analyse the searches already in DIR (a search-quality-* folder) "
                             "instead of running them; baselines are measured again")
    parser.add_argument("--render", nargs="+", metavar="JSON",
                        help="only merge earlier runs' search_quality.json files into --out")
    args = parser.parse_args()
    if args.render:
        return render(args)
    args.threads = 1 if args.parallel > 1 else 2
    tmp = args.reuse or tempfile.mkdtemp(prefix="search-quality-")
    results = []
    for workload in args.workloads.split(","):
        trials = args.trials if workload != "minilm" else args.minilm_trials
        long = args.long if workload != "minilm" else trials
        jobs = [{"workload": workload, "variant": "ours", "seed": 0, "trials": long}]
        jobs += [{"workload": workload, "variant": "ours", "seed": s, "trials": trials}
                 for s in range(1, args.seeds if workload != "minilm" else 1)]
        jobs += [{"workload": workload, "variant": "random", "seed": s, "trials": trials}
                 for s in range(args.seeds if workload != "minilm" else 1)]
        jobs += [{"workload": workload, "variant": "nsga2", "seed": s, "trials": trials}
                 for s in range(args.nsga2_seeds)]
        jobs = [j for j in jobs if j["variant"] in args.variants.split(",")]
        for job in jobs:
            job.update(dir=tmp, threads=args.threads)
        _threads(2)                       # alone on the machine: both cores
        from autocompress import api, sensitivity

        w = api.load_workload(workload)   # sensitivity once, before the timed searches
        began = time.perf_counter()
        analysis = sensitivity.analyse(w, api.discover_knobs(w))
        sens_s = time.perf_counter() - began
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.parallel, mp_context=spawn) as pool:
            base_future = pool.submit(baselines, workload, args.threads)
            if args.reuse:
                runs = [read_run(j, Path(tmp) / f"{j['workload']}-{j['variant']}-{j['seed']}")
                        for j in jobs]
            else:
                runs = list(pool.map(run_search, jobs))
            rows = base_future.result()
        result = analyse(workload, rows, runs, trials, long)
        result["sensitivity_seconds"] = analysis.seconds if analysis else None
        result["format_latency"] = analysis.format_latency if analysis else None
        result["sensitivity_wall_this_run_s"] = sens_s
        results.append(result)
        print(markdown([result], args), flush=True)
    write(results, args, Path(args.out))


if __name__ == "__main__":
    main()
