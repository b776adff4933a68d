"""Search speed on the built-in workloads: trials per minute and per-trial time split.

Usage: .venv/bin/python benchmarks/search_speed.py [--trials-digits 30] [--trials-minilm 20]
Prints a Markdown table (pasted into the README) and writes results/search_speed.json.
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autocompress import api  # noqa: E402
from autocompress.search.objectives import Budget  # noqa: E402
from autocompress.search.storage import load_study  # noqa: E402
from autocompress.workloads import load_workload  # noqa: E402

PHASES = ("apply", "export", "quality", "latency", "predict")


def measure(model: str, trials: int, budget: int, target: str) -> dict:
    start = time.perf_counter()
    load_workload(model)                       # built once, then cached in-process
    setup_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        config = api.SearchConfig(model=model, target=target, trials=trials, seed=0,
                                  budget=Budget(max_size_bytes=budget), out=f"{tmp}/run",
                                  finalize_s=0.0)   # trial speed; tight_budget.py times finalize
        start = time.perf_counter()
        try:
            result = api.search(config)
            document = result.document
        except api.InfeasibleError:
            document = json.loads(Path(f"{tmp}/run/pareto.json").read_text())
        wall = time.perf_counter() - start
        study = load_study(document["study"]["storage"], document["study"]["name"])
        timed = [t.user_attrs["metrics"]["timings_s"] for t in study.trials
                 if "metrics" in t.user_attrs and not t.user_attrs.get("reused_from_cache")]
    split = {p: statistics.median(t[p] for t in timed) for p in PHASES}
    best = max(document["front"], key=lambda p: p["quality"], default=None)
    baseline = document["baseline"]
    return {
        "model": model, "target": target, "trials": trials, "evaluated": len(timed),
        "reused_from_cache": trials - len(timed), "setup_s": setup_s, "search_wall_s": wall,
        "trials_per_minute": 60 * trials / wall,
        "median_trial_s": statistics.median(t["total"] for t in timed),
        "median_split_s": split, "front_size": len(document["front"]),
        "budget_bytes": budget,
        "baseline": {k: baseline[k] for k in ("quality", "size_bytes", "host_latency_s")},
        "best_in_budget": best and {k: best[k] for k in ("quality", "size_bytes", "host_latency_s",
                                                         "latency_s", "plan")},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials-digits", type=int, default=30)
    parser.add_argument("--trials-minilm", type=int, default=20)
    parser.add_argument("--out", default="results/search_speed.json")
    args = parser.parse_args()
    rows = [measure("digits-cnn", args.trials_digits, 100_000, "jetson-nano"),
            measure("minilm", args.trials_minilm, 4_000_000, "jetson-nano")]
    print("| workload | trials | trials/min | median trial | apply | export | quality | latency | predict | front (in budget) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["median_split_s"]
        print(f"| {r['model']} | {r['trials']} ({r['reused_from_cache']} cached) | "
              f"{r['trials_per_minute']:.1f} | {r['median_trial_s']:.2f} s | "
              + " | ".join(f"{s[p]:.2f} s" for p in PHASES) + f" | {r['front_size']} |")
    print()
    print("| workload | uncompressed: quality, size, host latency | budget | best quality in budget: quality, size, host latency, predicted target latency |")
    print("|---|---|---|---|")
    for r in rows:
        b, p = r["baseline"], r["best_in_budget"]
        best = (f"{p['quality']:.4f}, {p['size_bytes'] / 1e6:.3f} MB, {p['host_latency_s'] * 1e3:.2f} ms, "
                f"{p['latency_s'] * 1e3:.2f} ms on {r['target']}") if p else "none feasible"
        print(f"| {r['model']} | {b['quality']:.4f}, {b['size_bytes'] / 1e6:.3f} MB, "
              f"{b['host_latency_s'] * 1e3:.2f} ms | {r['budget_bytes'] / 1e6:g} MB | {best} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": os.uname().machine, "cpus": os.cpu_count(),
                                          "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
