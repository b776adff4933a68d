"""Cost-model accuracy on host: predicted vs measured latency, size and peak RAM.

Usage: .venv/bin/python benchmarks/cost_model_accuracy.py [--small]
Random plans are drawn from both built-in workloads (digits-cnn and minilm); each is built
into a real ONNX artifact (cached by plan digest, like the search does) and measured with
ONNX Runtime on this machine (median of 60 runs after 10 warm-up, 2 threads). The correction
is fitted on a "fit" set of plans only and scored on a held-out "test" set of other plans
(a digest in both is dropped from the test set). Peak RAM is measured in a fresh process
per candidate (cost_models.probe). Slow training knobs (``distill_steps``, ``replace``) and
the early-exit knobs are left off: distillation does not change the graph, ``replace``
trains a replacement module per layer, an early exit's latency depends on the input.
Prints the figures, writes
results/cost_model_accuracy.json and results/cost_model_accuracy.png.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORKLOADS = ("digits-cnn", "minilm")
LEFT_OUT = ("distill_steps", "replace", "exit_after", "exit_threshold")
FULL = {"digits-cnn": (60, 140), "minilm": (25, 60)}     # (fit, test): 85 fit, 200 held out
SMALL = {"digits-cnn": (30, 40), "minilm": (10, 12)}
GOALS = {"latency_mdape": 0.10, "latency_within_20pct": 0.90, "spearman": 0.9,
         "size_max_error": 0.01, "peak_ram_mdape": 0.15}


def random_params(knobs, rng) -> dict:
    """One plan: each knob moves off its default with a per-plan probability, so the set
    spans near-uncompressed to heavily compressed models."""
    density = rng.random()
    return {k.key: (rng.choice(k.choices[1:]) if k.name not in LEFT_OUT and len(k.choices) > 1
                    and rng.random() < density else k.choices[0]) for k in knobs}


def measured(workload, plan, root: Path, timing) -> dict:
    """Build (or reuse) the plan's artifact and measure it; cached as JSON by plan digest."""
    from autocompress.backends import ort_runner
    from autocompress.compression.apply import apply_plan
    from autocompress.cost_models.probe import isolated_peak_ram
    from autocompress.paths import cache_dir
    from autocompress.pipeline import workload_key

    record_path = root / f"{plan.digest()}.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else None
    if record is None:
        artifact = cache_dir() / "artifacts" / workload_key(workload) / f"{plan.digest()}.onnx"
        start = time.perf_counter()
        if not artifact.exists():
            apply_plan(plan, workload, artifact)
        build_s = time.perf_counter() - start
        session = ort_runner.make_session(artifact, timing.threads)
        latency = ort_runner.measure_latency(session, workload.example, timing)
        del session
        record = {"workload": workload.name, "plan_digest": plan.digest(),
                  "artifact": str(artifact), "size_bytes": artifact.stat().st_size,
                  "latency": latency.to_dict(), "build_s": build_s}
    if record.get("isolated_peak_ram_bytes") is None:
        record["isolated_peak_ram_bytes"] = isolated_peak_ram(record["artifact"], workload.example,
                                                              timing.threads)
        record_path.write_text(json.dumps(record))
    return record


def collect(name: str, count: int, split: str, exclude: set = frozenset()) -> list[dict]:
    from autocompress import api
    from autocompress.backends import ort_runner
    from autocompress.paths import cache_dir
    from autocompress.pipeline import workload_key
    from autocompress.search.space import params_to_plan
    from autocompress.workloads import load_workload

    timing = ort_runner.TimingConfig(warmup=10, repeat=60, threads=2)
    workload = load_workload(name)
    knobs = api.discover_knobs(workload)
    root = cache_dir() / "cost_model_accuracy" / workload_key(workload)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{name}-{split}")
    records, seen = [], set(exclude)
    while len(records) < count:
        plan = params_to_plan(random_params(knobs, rng), knobs)
        if plan.digest() in seen:
            continue
        seen.add(plan.digest())
        try:
            records.append(measured(workload, plan, root, timing))
        except Exception as err:   # a plan the compressor rejects: say so, draw another
            print(f"  {name} {split}: plan {plan.digest()} skipped ({type(err).__name__}: {err})")
            continue
        if len(records) % 10 == 0:
            print(f"  {name} {split}: {len(records)}/{count}", flush=True)
    for record in records:
        record["shapes"] = {k: list(v.shape) for k, v in workload.example.items()}
        record["record_path"] = str(root / f"{record['plan_digest']}.json")
    return records


def remeasure(records, rounds: int) -> None:
    """Time every candidate ``rounds`` more times, round-robin over the whole set, and keep
    the lowest round median as its latency: on a shared machine another process's burst
    only ever adds time, and it lands on different candidates in different rounds."""
    from autocompress.backends import ort_runner
    from autocompress.workloads import load_workload

    timing = ort_runner.TimingConfig(warmup=10, repeat=60, threads=2)
    for round_ in range(rounds):
        for r in records:
            path = r["record_path"]
            medians = r["latency"].setdefault("round_medians_s", [r["latency"]["median_s"]])
            if len(medians) > round_ + 1:
                continue
            session = ort_runner.make_session(r["artifact"], timing.threads)
            example = load_workload(r["workload"]).example
            medians.append(ort_runner.measure_latency(session, example, timing).median_s)
            r["latency"]["best_median_s"] = min(medians)
            Path(r.pop("record_path")).write_text(json.dumps(r))
            r["record_path"] = str(path)
        print(f"  re-measured round {round_ + 1}/{rounds}", flush=True)


def latency_of(record) -> float:
    return record["latency"].get("best_median_s", record["latency"]["median_s"])


def describe_record(record):
    from autocompress.cost_models.layers import describe

    return describe(record["artifact"], {k: tuple(v) for k, v in record["shapes"].items()})


def fit_model(records, profile):
    """A host model calibrated on ``records`` only (in memory; the user's file is untouched)."""
    from autocompress.cost_models.calibrated import CalibratedModel
    from autocompress.cost_models.calibration import CalibrationStore, Sample
    from autocompress.cost_models.features import latency_features, ram_features

    store = CalibrationStore("host-benchmark")
    for r in records:
        graph = describe_record(r)
        store.add(Sample(f"{r['workload']}:{r['plan_digest']}", latency_features(profile, graph),
                         ram_features(graph), latency_of(r),
                         r["isolated_peak_ram_bytes"], "host benchmark"))
    return CalibratedModel(profile, store, persist=False)


def score(records, model) -> dict:
    import numpy as np
    from scipy.stats import spearmanr

    from autocompress.cost_models.size import predict_size

    rows = []
    for r in records:
        graph = describe_record(r)
        rows.append({"workload": r["workload"], "plan_digest": r["plan_digest"],
                     "latency_s": latency_of(r),
                     "latency_first_median_s": r["latency"]["median_s"],
                     "latency_p90_s": r["latency"]["p90_s"],
                     "predicted_latency_s": model.latency_s(graph),
                     "roofline_latency_s": model.roofline.latency_s(graph),
                     "size_bytes": r["size_bytes"],
                     "predicted_size_bytes": predict_size(r["artifact"]),
                     "peak_ram_bytes": r["isolated_peak_ram_bytes"],
                     "predicted_peak_ram_bytes": model.peak_ram_bytes(graph)})

    def err(key, pred):
        m = np.array([row[key] for row in rows], dtype=float)
        p = np.array([row[pred] for row in rows], dtype=float)
        return np.abs(p - m) / m, m, p

    lat, m, p = err("latency_s", "predicted_latency_s")
    roof, _, rp = err("latency_s", "roofline_latency_s")
    size, _, _ = err("size_bytes", "predicted_size_bytes")
    ram = [row for row in rows if row["peak_ram_bytes"]]
    ram_err = np.array([abs(row["predicted_peak_ram_bytes"] - row["peak_ram_bytes"])
                        / row["peak_ram_bytes"] for row in ram])
    figures = {
        "n_test": len(rows),
        "latency_mdape": float(np.median(lat)),
        "latency_within_20pct": float((lat <= 0.2).mean()),
        "spearman": float(spearmanr(m, p).statistic),
        "size_max_error": float(size.max()),
        "peak_ram_mdape": float(np.median(ram_err)) if len(ram) else None,
        "uncalibrated_roofline": {"latency_mdape": float(np.median(roof)),
                                  "latency_within_20pct": float((roof <= 0.2).mean()),
                                  "spearman": float(spearmanr(m, rp).statistic)},
        "per_workload": {}}
    for name in sorted({row["workload"] for row in rows}):
        pick = np.array([row["workload"] == name for row in rows])
        figures["per_workload"][name] = {
            "n": int(pick.sum()), "latency_mdape": float(np.median(lat[pick])),
            "latency_within_20pct": float((lat[pick] <= 0.2).mean()),
            "spearman": float(spearmanr(m[pick], p[pick]).statistic),
            "size_max_error": float(size[pick].max()),
            "peak_ram_mdape": float(np.median([e for e, row in zip(ram_err, ram)
                                               if row["workload"] == name]))}
    return figures, rows


def scatter(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), constrained_layout=True)
    for ax, key, unit, scale in ((axes[0], "latency_s", "ms", 1e3),
                                 (axes[1], "peak_ram_bytes", "MB", 1e-6)):
        for name, color in (("digits-cnn", "tab:blue"), ("minilm", "tab:orange")):
            pts = [(r[key] * scale, r[f"predicted_{key}"] * scale) for r in rows
                   if r["workload"] == name and r[key]]
            if pts:
                ax.scatter(*zip(*pts), s=12, alpha=0.7, color=color, label=name)
        lo = min(min(r[key], r[f"predicted_{key}"]) for r in rows if r[key]) * scale
        hi = max(max(r[key], r[f"predicted_{key}"]) for r in rows if r[key]) * scale
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.fill_between([lo, hi], [lo * 0.8, hi * 0.8], [lo * 1.2, hi * 1.2], color="0.85",
                        label="±20%")
        ax.set(xscale="log", yscale="log", xlabel=f"measured ({unit})",
               ylabel=f"predicted ({unit})", title=key.replace("_", " ") + " (held-out, host)")
        ax.legend()
    fig.savefig(path, dpi=120)


def main() -> None:
    from autocompress.device_profiles import resolve_target

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a quick development run")
    parser.add_argument("--out", default="results/cost_model_accuracy")
    parser.add_argument("--save-calibration", action="store_true",
                        help="also add the fit set's samples to this machine's host calibration")
    parser.add_argument("--rounds", type=int, default=2,
                        help="extra timing rounds per candidate (lowest round median kept)")
    args = parser.parse_args()
    sizes = SMALL if args.small else FULL
    start = time.perf_counter()
    fit, test = [], []
    for name in WORKLOADS:
        n_fit, n_test = sizes[name]
        fit += collect(name, n_fit, "fit")
        test += collect(name, n_test, "test", {r["plan_digest"] for r in fit})
    remeasure(fit + test, args.rounds)
    profile = resolve_target("host")
    model = fit_model(fit, profile)
    figures, rows = score(test, model)
    if args.save_calibration:
        from autocompress.cost_models.calibrated import CalibratedModel
        from autocompress.cost_models.calibration import CalibrationStore

        host = CalibratedModel(profile, CalibrationStore.load("host"))
        for sample in model.store.samples:
            host.store.add(sample)
        host.fit()
        print(f"host calibration: {host.store.save()} ({len(host.store.samples)} samples)")
    figures.update({"n_fit": len(fit), "goals": GOALS, "model": model.summary(),
                    "left_out_knobs": list(LEFT_OUT), "small_run": args.small,
                    "timing": "median of 60 runs after 10 warm-up, 2 threads; lowest of "
                              f"{1 + args.rounds} round-robin rounds",
                    "wall_s": time.perf_counter() - start})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"figures": figures, "test": rows}, indent=1))
    scatter(rows, out.with_suffix(".png"))
    print(f"held-out candidates: {figures['n_test']} (fit on {figures['n_fit']} others)")
    for key, goal in GOALS.items():
        value = figures[key]
        better = value is not None and (value >= goal if key in ("latency_within_20pct", "spearman")
                                        else value <= goal)
        print(f"  {key:22s} {value if value is None else round(value, 4)!s:>8}  goal {goal}  "
              f"{'met' if better else 'NOT met'}")
    print(f"  uncalibrated roofline: {figures['uncalibrated_roofline']}")
    for name, f in figures["per_workload"].items():
        print(f"  {name}: {f}")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
