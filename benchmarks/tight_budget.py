"""Tight budgets (issue 13): the headline command and digits-cnn under small budgets,
the figures before this work beside today's.

Usage: .venv/bin/python benchmarks/tight_budget.py
       [--only demo,digits-plan,digits-small,hypervolume,peers]
       [--warm] [--digits-small-trials 30] [--run RUN_FOLDER] [--rounds 5] [--keep DIR]

- ``demo``: ``autocompress search --target jetson-nano --budget 4MB`` on the default model
  (MiniLM), exactly as ``make demo`` runs it, timed from the command's start (sensitivity
  analysis, training-corpus collection, search and finalize included). The cache is a fresh
  temporary folder unless ``--warm`` (a fresh clone has none). Reported: wall time and the
  best point within 4 MB (cosine and Spearman to the uncompressed model on the held-out
  sentences; its untrained quality beside it). Goal: cosine and Spearman >= 0.90 in <= 30 min.
- ``digits-plan``: ``autocompress plan --model digits-cnn --budget 100KB --max-latency 1ms
  --trials 20``: the accuracy of the plan picked per target. Goal: >= 0.9933 (uniform
  weight-only int8 alone: 0.9933 at 97 kB).
- ``digits-small``: ``autocompress search --model digits-cnn --budget 30KB --trials N``: the
  smallest point within 1 point of the uncompressed accuracy. Goal: <= 30 kB.
- ``hypervolume``: runs nothing; reads ``results/search_quality*.json`` (written by
  ``benchmarks/search_quality.py``, which runs the searches; a longer MiniLM run may be kept
  beside the merged file) and sets our search's median hypervolume at each trial budget
  beside the figure the issue called today's where the budgets match. Goal: no worse.
- ``peers``: the recipes issue 13 compares with, built here from the uncompressed MiniLM ONNX
  file the workload exports: ONNX Runtime's ``quantize_dynamic`` int8 (per tensor and per
  channel), ORT's MatMulNBits 4-bit (embedding Gather included; symmetric as the issue
  measured it, asymmetric = ORT's default), NNCF ``compress_weights`` INT4 per channel on every
  layer (symmetric as measured, asymmetric) and INT8 weights. Each is scored with the
  workload's metric (mean cosine and Spearman to the uncompressed model on the held-out
  sentences) and timed in this one process, round-robin with the uncompressed model and the
  other recipes (ORT, batch 1, the workload's example, 2 threads). ``--run RUN_FOLDER`` adds a
  finished run's front points (``--min-quality``, recorded) to the same timing and prints the
  issue's two comparisons as true/false. The peers are optional benchmark dependencies
  (``pip install -e '.[peers]'``); a recipe whose package is missing is skipped with one line.

Each command runs in a subprocess, one at a time (the machine has 2 cores). Writes
results/tight_budget.json and prints a table.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
CLI = [sys.executable, "-m", "autocompress.cli"]

BEFORE = {   # issue 13, measured on main before the budget solver and the finalize stage
    "demo": {"wall_s": 502.0, "cosine": 0.1238, "size_bytes": None},
    "digits-plan": {"quality": 0.8644},
    "digits-small": {"size_bytes": 65600},
    # results/search_quality.json of 6710c84 (the figures the issue called today's): ours,
    # median hypervolume at the trial budget (digits-cnn: 2 seeds, 100 trials; MiniLM: 1 seed,
    # 24 trials), two searches side by side on one thread each
    "hypervolume": {"digits-cnn": {"trials": 100, "median": 3.3040},
                    "minilm": {"trials": 24, "median": 4.0896}},
}


def run(args: list[str], env: dict, log: Path) -> tuple[int, float]:
    start = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(CLI + args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - start


def environment(cache: Path | None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if cache is not None:
        env["AUTOCOMPRESS_CACHE"] = str(cache)
    return env


def best_within(front: list[dict], max_bytes: float) -> dict | None:
    fits = [p for p in front if p["size_bytes"] <= max_bytes]
    return max(fits, key=lambda p: p["quality"]) if fits else None


def demo(work: Path, warm: bool) -> dict:
    cache = None if warm else work / "cache"
    out = work / "demo"
    rc, wall = run(["search", "--target", "jetson-nano", "--budget", "4MB", "--out", str(out)],
                   environment(cache), work / "demo.log")
    row = {"command": "autocompress search --target jetson-nano --budget 4MB", "rc": rc,
           "wall_s": round(wall, 1), "cold_cache": not warm}
    pareto = out / "pareto.json"
    if not pareto.is_file():
        row["error"] = (work / "demo.log").read_text()[-2000:]
        return row
    doc = json.loads(pareto.read_text())
    best = best_within(doc["front"], 4e6)
    row["verdict"] = doc.get("verdict")
    row["finalize"] = {k: v for k, v in (doc.get("finalize") or {}).items() if k != "probes"}
    if best is not None:
        details = best.get("quality_details", {})
        row.update(size_bytes=best["size_bytes"], cosine=details.get("cosine_mean", best["quality"]),
                   spearman=details.get("spearman"), plan_digest=best.get("plan_digest"),
                   untrained=best.get("untrained"), recovery=best.get("recovery"),
                   latency_s=best.get("latency_s"))
    row["goal_met"] = bool(best and row.get("cosine", 0) >= 0.90 and (row.get("spearman") or 0) >= 0.90
                           and wall <= 1800)
    return row


def digits_plan(work: Path) -> dict:
    out = work / "digits-plan"
    rc, wall = run(["plan", "--model", "digits-cnn", "--budget", "100KB", "--max-latency", "1ms",
                    "--trials", "20", "--out", str(out)], environment(None), work / "plan.log")
    row = {"command": "autocompress plan --model digits-cnn --budget 100KB --max-latency 1ms "
                      "--trials 20", "rc": rc, "wall_s": round(wall, 1)}
    plan = out / "plan.json"
    if not plan.is_file():
        row["error"] = (work / "plan.log").read_text()[-2000:]
        return row
    targets = json.loads(plan.read_text())["targets"]
    row["targets"] = {t["target"]: (t["best"] or {}).get("quality") for t in targets}
    sizes = {t["target"]: (t["best"] or {}).get("size_bytes") for t in targets}
    row["sizes"] = sizes
    found = [q for q in row["targets"].values() if q is not None]
    row["quality"] = min(found) if found else None
    row["goal_met"] = bool(found) and min(found) >= 0.9933
    # 0.9933 was the uncompressed accuracy where the issue was filed; the model trained here
    # may score otherwise (one test image is 0.0022), so what it keeps is recorded beside it
    pareto = out / "pareto.json"
    if pareto.is_file():
        base = json.loads(pareto.read_text())["baseline"]["quality"]
        row.update(baseline_quality=base,
                   keeps_uncompressed=bool(found) and min(found) >= base)
    return row


def digits_small(work: Path, trials: int) -> dict:
    out = work / "digits-small"
    rc, wall = run(["search", "--model", "digits-cnn", "--target", "host", "--budget", "30KB",
                    "--trials", str(trials), "--out", str(out)], environment(None),
                   work / "small.log")
    row = {"command": f"autocompress search --model digits-cnn --target host --budget 30KB "
                      f"--trials {trials}", "rc": rc, "wall_s": round(wall, 1)}
    pareto = out / "pareto.json"
    if not pareto.is_file():
        row["error"] = (work / "small.log").read_text()[-2000:]
        return row
    doc = json.loads(pareto.read_text())
    base = doc["baseline"]["quality"]
    from optuna.trial import TrialState

    sys.path.insert(0, str(ROOT))
    from autocompress.search.storage import load_study

    study = load_study(doc["study"]["storage"], doc["study"]["name"])
    points = [(t.user_attrs["metrics"]["size_bytes"], t.user_attrs["metrics"]["quality"])
              for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if "metrics" in t.user_attrs]
    points += [(p["size_bytes"], p["quality"]) for p in doc["front"]]   # finals included
    within = sorted(p for p in points if p[1] >= base - 0.01)
    row.update(baseline_quality=base, verdict=doc.get("verdict"))
    if within:
        row.update(size_bytes=within[0][0], quality=within[0][1])
    row["goal_met"] = bool(within) and within[0][0] <= 30000
    return row


def hypervolume() -> dict:
    """Our search's hypervolume per workload and trial budget, from the results of
    search_quality.py (``results/search_quality*.json``: the merged file and any longer run
    kept beside it)."""
    paths = sorted(RESULTS.glob("search_quality*.json"))
    if not paths:
        raise SystemExit(f"{RESULTS}/search_quality.json: missing; run benchmarks/search_quality.py")
    row = {"sources": [str(p.relative_to(ROOT)) for p in paths], "workloads": {}}
    for path in paths:
        doc = json.loads(path.read_text())
        for result in doc["results"]:
            name, hv = result["workload"], result["hypervolume"]
            args = result.get("run_args") or doc["args"]
            trials = args["minilm_trials"] if name == "minilm" else args["trials"]
            before = BEFORE["hypervolume"].get(name)
            ours = hv.get("ours")
            comparable = bool(before and trials == before["trials"])
            row["workloads"][f"{name}@{trials}"] = {
                "workload": name, "trials": trials, "ours": ours, "source": path.name,
                "others": {v: s["median"] for v, s in hv.items() if v != "ours"},
                "goal_met": (bool(ours) and ours["median"] >= before["median"]) if comparable
                else None}
    return row


# ------------------------------------------------------------------ peers (issue 13)
ISSUE_PEERS = {   # issue 13's figures for the same recipes on the same MiniLM and evaluation set
    "ort-int8-uniform": {"size_bytes": None, "cosine": 0.967},
    "ort-int8-per-channel": {"size_bytes": 22.9e6, "cosine": 0.993},
    "ort-nbits4-sym": {"size_bytes": 12.2e6, "cosine": 0.947},
    "nncf-int4-sym": {"size_bytes": 11.7e6, "cosine": 0.898},
    "nncf-int8": {"size_bytes": 23.0e6, "cosine": 0.9997},
}


def _ort_dynamic(per_channel: bool):
    def build(src: Path, dst: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)
    return build


def _ort_nbits(symmetric: bool):
    def build(src: Path, dst: Path) -> None:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        logging.getLogger(MatMulNBitsQuantizer.__module__).setLevel(logging.WARNING)   # no INFO per node
        quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), bits=4, block_size=128,
                                         is_symmetric=symmetric,
                                         op_types_to_quantize=("MatMul", "Gather"))
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    return build


def _nncf(mode: str, **options):
    def build(src: Path, dst: Path) -> None:
        os.environ.setdefault("NNCF_CI", "1")   # NNCF's telemetry becomes a stub (no network)
        import nncf
        import onnx

        nncf.set_log_level(logging.ERROR)
        model = nncf.compress_weights(onnx.load(str(src)),
                                      mode=getattr(nncf.CompressWeightsMode, mode), **options)
        onnx.save(model, str(dst))
    return build


_NNCF_INT4 = {"ratio": 1.0, "group_size": -1, "all_layers": True}
PEER_RECIPES = {   # name -> (what it is, modules it needs, build(src, dst))
    "ort-int8-uniform": ("ORT quantize_dynamic int8, per tensor (the tool's default)",
                         ("onnxruntime",), _ort_dynamic(False)),
    "ort-int8-per-channel": ("ORT quantize_dynamic(per_channel=True) int8",
                             ("onnxruntime",), _ort_dynamic(True)),
    "ort-nbits4-sym": ("ORT MatMulNBits 4-bit, block 128, symmetric, MatMul + embedding Gather",
                       ("onnxruntime", "onnx_ir"), _ort_nbits(True)),
    "ort-nbits4-asym": ("ORT MatMulNBits 4-bit, block 128, asymmetric (ORT's default), MatMul + "
                        "embedding Gather", ("onnxruntime", "onnx_ir"), _ort_nbits(False)),
    "nncf-int4-sym": ("NNCF compress_weights INT4_SYM, per channel, every layer (ratio 1, "
                      "all_layers)", ("nncf",), _nncf("INT4_SYM", **_NNCF_INT4)),
    "nncf-int4-asym": ("NNCF compress_weights INT4_ASYM, per channel, every layer (ratio 1, "
                       "all_layers)", ("nncf",), _nncf("INT4_ASYM", **_NNCF_INT4)),
    "nncf-int8": ("NNCF compress_weights INT8_ASYM weights (its default)", ("nncf",),
                  _nncf("INT8_ASYM")),
}


def build_peers(fp32: Path, work: Path) -> tuple[dict, dict]:
    """Each recipe's file ({name: path}) and why the others are missing ({name: reason})."""
    built, skipped = {}, {}
    for name, (_, modules, build) in PEER_RECIPES.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        dst = work / f"{name}.onnx"
        try:
            if missing:
                raise ModuleNotFoundError(f"{', '.join(missing)} not installed "
                                          "(pip install -e '.[peers]')")
            build(fp32, dst)
            built[name] = dst
        except Exception as err:   # noqa: BLE001 - a peer tool failing is a row, not a crash
            skipped[name] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
            print(f"skipped {name}: {skipped[name]}", flush=True)
    return built, skipped


PEER_TIMING = {"warmup": 10, "repeat": 100}   # per round; latency = median of round medians


def run_points(run: Path, min_quality: float) -> dict:
    """A finished run's front points with recorded quality >= min_quality, as candidates."""
    from autocompress.report.table import plan_summary

    points = {}
    for p in json.loads((run / "pareto.json").read_text())["front"]:
        path = run / p["artifact"] if p.get("artifact") else None
        if p["quality"] < min_quality:
            continue
        if path is None or not path.is_file():
            print(f"skipped trial {p['id']}: its artifact {p.get('artifact')} is not in {run}")
            continue
        points[f"ours: trial {p['id']}"] = {
            "path": path, "source": "run", "recorded_quality": p["quality"],
            "recorded_spearman": p.get("quality_details", {}).get("spearman"),
            "plan_digest": p.get("plan_digest"), "plan": plan_summary(p["plan"])}
    return points


def time_side_by_side(paths: dict, example: dict, rounds: int, threads: int) -> dict:
    """{name: [median per round]}: every file timed once per round, the order rotated."""
    from autocompress.backends import ort_runner

    timing = ort_runner.TimingConfig(threads=threads, **PEER_TIMING)
    sessions = {name: ort_runner.make_session(path, threads) for name, path in paths.items()}
    names = list(sessions)
    medians = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            medians[name].append(ort_runner.measure_latency(sessions[name], example,
                                                            timing).median_s)
    return medians


def score_file(workload, path: Path, threads: int) -> dict:
    """The workload's own metric on its evaluation set: mean cosine and Spearman for MiniLM."""
    from autocompress.backends import ort_runner

    quality = workload.score(ort_runner.run_batches(ort_runner.make_session(path, threads),
                                                    workload.evaluation))
    return {"cosine": quality.details.get("cosine_mean", quality.value),
            "spearman": quality.details.get("spearman")}


def comparisons(rows: dict) -> dict:
    """Issue 13's two comparisons between the run's points and ORT's int8 files."""
    ours = [r for r in rows.values() if r["source"] == "run"]
    out = {}
    uniform, channel = rows.get("ort-int8-uniform"), rows.get("ort-int8-per-channel")
    if uniform:
        at = [r for r in ours if r["cosine"] >= uniform["cosine"]]
        best = min(at, key=lambda r: r["latency_s"]) if at else None
        speedup = uniform["latency_s"] / best["latency_s"] if best else None
        out["faster_than_uniform_int8"] = {
            "goal": ">= 1.5x faster than ORT uniform dynamic int8 at >= its cosine",
            "met": bool(speedup and speedup >= 1.5), "reference": uniform["name"],
            "point": best and best["name"], "speedup": speedup}
    if channel:
        at = [r for r in ours if r["cosine"] >= channel["cosine"]
              and r["size_bytes"] <= channel["size_bytes"]]
        best = min(at, key=lambda r: r["latency_s"]) if at else None
        out["within_per_channel_int8"] = {
            "goal": "no larger and no slower than ORT per-channel dynamic int8 at >= its cosine",
            "met": bool(best and best["latency_s"] <= channel["latency_s"]),
            "reference": channel["name"], "point": best and best["name"],
            "latency_ratio": best and best["latency_s"] / channel["latency_s"]}
    return out


def _run_config(run: Path | None) -> dict:
    """The run's config as pareto.json records it; MiniLM without a run."""
    return json.loads((run / "pareto.json").read_text())["config"] if run else {"model": "minilm"}


def _run_workload(config: dict):
    """The workload the run's config names."""
    from autocompress import api

    return api.load_user_workload(config["model"], config.get("data"),
                                  config.get("input_shapes", ()), config.get("metric"))


def measure_candidates(workload, candidates: dict, rounds: int, threads: int) -> dict:
    """Size, quality and side-by-side latency of every candidate: {name: row}."""
    medians = time_side_by_side({n: c["path"] for n, c in candidates.items()}, workload.example,
                                rounds, threads)
    rows = {name: {"name": name, **{k: v for k, v in c.items() if k != "path"},
                   "size_bytes": Path(c["path"]).stat().st_size,
                   **score_file(workload, Path(c["path"]), threads),
                   "latency_s": statistics.median(medians[name]), "round_medians_s": medians[name]}
            for name, c in candidates.items()}
    uniform = rows.get("ort-int8-uniform", {}).get("latency_s")
    for row in rows.values():
        row["vs_uncompressed"] = row["latency_s"] / rows["uncompressed"]["latency_s"]
        row["vs_ort_int8_uniform"] = row["latency_s"] / uniform if uniform else None
    return rows


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("onnxruntime", "nncf", "onnx-ir"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def peers(work: Path, run: Path | None, min_quality: float, rounds: int, threads: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from autocompress.compression.apply import apply_plan
    from autocompress.compression.plan import Plan

    config = _run_config(run)
    workload = _run_workload(config)
    fp32 = apply_plan(Plan(), workload, work / "uncompressed.onnx").path
    built, skipped = build_peers(fp32, work)
    candidates = {"uncompressed": {"path": fp32, "source": "uncompressed"}}
    candidates.update({n: {"path": p, "source": "peer", "recipe": PEER_RECIPES[n][0]}
                       for n, p in built.items()})
    candidates.update(run_points(run, min_quality) if run else {})
    load_start = os.getloadavg()
    rows = measure_candidates(workload, candidates, rounds, threads)
    return {"model": workload.name, "run": str(run) if run else None,
            "run_command": config.get("command"),
            "min_quality": min_quality,
            "timing": {"rounds": rounds, **PEER_TIMING, "threads": threads,
                       "batch": "the workload's example (batch 1)",
                       "order": "round-robin in one process, rotated each round; latency = "
                                "median of the round medians"},
            "machine": {"cpus": os.cpu_count(), "loadavg_at_timing_start": load_start,
                        "loadavg_at_end": os.getloadavg()},
            "versions": _versions(), "issue_figures": ISSUE_PEERS, "skipped": skipped,
            "rows": rows, "comparisons": comparisons(rows)}


def peers_table(doc: dict) -> str:
    lines = ["| recipe | size | cosine | Spearman | host latency | vs uncompressed | "
             "vs ORT uniform int8 |", "|---|---|---|---|---|---|---|"]
    for r in doc["rows"].values():
        ratio = r["vs_ort_int8_uniform"]
        lines.append(f"| {r['name']} | {r['size_bytes'] / 1e6:.2f} MB | {_f(r['cosine'])} | "
                     f"{_f(r['spearman'])} | {r['latency_s'] * 1e3:.2f} ms | "
                     f"{r['vs_uncompressed']:.2f}x | {'-' if ratio is None else f'{ratio:.2f}x'} |")
    for name, reason in doc["skipped"].items():
        lines.append(f"| {name} | skipped: {reason} | | | | | |")
    return "\n".join(lines)


def comparison_lines(doc: dict) -> list[str]:
    if not doc["run"]:
        return ["comparisons with our points: no --run RUN_FOLDER given"]
    rows, lines = doc["rows"], [f"our points: {' '.join(doc.get('run_command') or [doc['run']])}"]
    for key, c in doc["comparisons"].items():
        ref = rows[c["reference"]]
        words = (f"{key}: {c['met']} ({c['goal']}): {c['reference']} "
                 f"{ref['latency_s'] * 1e3:.2f} ms, {ref['size_bytes'] / 1e6:.2f} MB, "
                 f"cosine {ref['cosine']:.4f}")
        if c["point"] is None:
            lines.append(words + f"; no point of the run at cosine >= {ref['cosine']:.4f}"
                         + (" and that size" if key == "within_per_channel_int8" else ""))
            continue
        p = rows[c["point"]]
        ratio = (f"{c['speedup']:.2f}x faster" if "speedup" in c
                 else f"{c['latency_ratio']:.2f}x its latency")
        lines.append(words + f"; {c['point']} {p['latency_s'] * 1e3:.2f} ms, "
                     f"{p['size_bytes'] / 1e6:.2f} MB, cosine {p['cosine']:.4f} ({ratio})")
    return lines


def table(rows: dict) -> str:
    lines = ["| figure | before | now | goal | met |", "|---|---|---|---|---|"]
    d = rows.get("demo")
    if d:
        lines.append(f"| demo: best cosine <= 4 MB | {BEFORE['demo']['cosine']} | "
                     f"{_f(d.get('cosine'))} (Spearman {_f(d.get('spearman'))}, "
                     f"{_kb(d.get('size_bytes'))}) | >= 0.90 both | {d.get('goal_met')} |")
        lines.append(f"| demo: wall time | {BEFORE['demo']['wall_s']:.0f} s | {d['wall_s']:.0f} s"
                     f" ({'cold' if d['cold_cache'] else 'warm'} cache) | <= 1800 s | "
                     f"{d['wall_s'] <= 1800} |")
    p = rows.get("digits-plan")
    if p:
        lines.append(f"| digits plan 100 kB / 1 ms, 20 trials: accuracy | "
                     f"{BEFORE['digits-plan']['quality']} | {_f(p.get('quality'))} (uncompressed "
                     f"here: {_f(p.get('baseline_quality'))}) | >= 0.9933 | {p.get('goal_met')} "
                     f"(keeps the uncompressed accuracy: {p.get('keeps_uncompressed')}) |")
    s = rows.get("digits-small")
    if s:
        lines.append(f"| digits smallest within 1 point | 65.6 kB | {_kb(s.get('size_bytes'))} "
                     f"(accuracy {_f(s.get('quality'))}) | <= 30 kB | {s.get('goal_met')} |")
    for w in (rows.get("hypervolume") or {}).get("workloads", {}).values():
        before, ours = BEFORE["hypervolume"].get(w["workload"], {}), w["ours"] or {}
        spread = (f" ({ours['min']:.3f}-{ours['max']:.3f}, {len(ours['hv_at_trials'])} seeds)"
                  if len(ours.get("hv_at_trials", [])) > 1 else "")
        was = before.get("median", "-") if before.get("trials") == w["trials"] else "-"
        lines.append(f"| {w['workload']}: hypervolume at {w['trials']} trials (ours) | {was} | "
                     f"{_f(ours.get('median'))}{spread} | no worse | "
                     f"{'-' if w['goal_met'] is None else w['goal_met']} |")
    return "\n".join(lines)


def _f(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def _kb(x) -> str:
    return "-" if x is None else f"{x / 1000:.1f} kB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="demo,digits-plan,digits-small,hypervolume,peers")
    parser.add_argument("--warm", action="store_true", help="demo with the user's cache")
    parser.add_argument("--digits-small-trials", type=int, default=30)
    parser.add_argument("--run", type=Path, help="peers: a finished run folder whose front "
                        "points are timed beside the peers")
    parser.add_argument("--min-quality", type=float, default=0.96,
                        help="peers: front points with at least this recorded quality")
    parser.add_argument("--rounds", type=int, default=5, help="peers: timing rounds")
    parser.add_argument("--threads", type=int, default=2, help="peers: ORT intra-op threads")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (run "
                        "folders, logs, the fresh cache) instead of a temporary one")
    args = parser.parse_args()
    if args.run is not None and not (args.run / "pareto.json").is_file():
        raise SystemExit(f"--run {args.run}: no pareto.json there (a finished run folder)")
    wanted = args.only.split(",")
    path = RESULTS / "tight_budget.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="tight-budget-") as tmp:
        work = Path(tmp) if args.keep is None else args.keep
        work.mkdir(parents=True, exist_ok=True)
        for name in wanted:
            print(f"running {name} ...", flush=True)
            if name == "demo":
                rows[name] = demo(work, args.warm)
            elif name == "digits-plan":
                rows[name] = digits_plan(work)
            elif name == "digits-small":
                rows[name] = digits_small(work, args.digits_small_trials)
            elif name == "hypervolume":
                rows[name] = hypervolume()
            elif name == "peers":
                rows[name] = peers(work, args.run, args.min_quality, args.rounds, args.threads)
            else:
                raise SystemExit(f"unknown part {name!r}")
            rows[name]["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            RESULTS.mkdir(exist_ok=True)
            path.write_text(json.dumps({"before": BEFORE, "rows": rows}, indent=1, default=str))
    print(table(rows))
    if "peers" in rows:
        print(f"\npeers ({rows['peers']['model']}, timed side by side in one process):")
        print(peers_table(rows["peers"]))
        print("\n".join(comparison_lines(rows["peers"])))


if __name__ == "__main__":
    main()
