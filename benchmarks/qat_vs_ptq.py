"""PTQ vs QAT on aggressive quantization plans: same plan, same artifact format, quality of each.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/qat_vs_ptq.py [digits-cnn] [minilm] [--steps N]

Plans: uniform ``w4`` on every Linear/Conv, and a w2/w3 mix (``w2`` on the larger half of
the layers offering low bits, ``w3`` on the others, ``w4`` where low bits are not offered).
Quality is the workload's own metric on its held-out evaluation set, in ONNX Runtime; the
QAT artifact has the same format and size as the PTQ one (printed to show it).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autocompress.backends import ort_runner  # noqa: E402
from autocompress.compression.apply import apply_plan  # noqa: E402
from autocompress.api import discover_knobs  # noqa: E402
from autocompress.compression.plan import QUANT, Plan  # noqa: E402
from autocompress.compression.qat import QATConfig, apply_qat  # noqa: E402
from autocompress.workloads import load_workload  # noqa: E402

STEPS = {"digits-cnn": 120, "minilm": 60}


def aggressive_plans(workload) -> dict[str, Plan]:
    """Uniform ``w4`` on every Linear/Conv the search can quantize, and a w2/w3 mix: ``w2`` on
    the larger half (by weight count) of the layers that offer low bits, ``w3`` on the rest.
    Embedding tables stay float (their knobs are separate)."""
    knobs = [k for k in discover_knobs(workload) if k.name == QUANT and "w8a8" in k.choices]
    plans = {"uniform w4": Plan({k.unit: {QUANT: "w4"} for k in knobs if "w4" in k.choices})}
    low = [k.unit for k in knobs if "w2" in k.choices and "w3" in k.choices]
    if low:
        sizes = {u: workload.model.get_submodule(u).weight.numel() for u in low}
        ranked = sorted(low, key=lambda u: (-sizes[u], u))
        big = set(ranked[:len(ranked) // 2])
        mix = {k.unit: {QUANT: "w2" if k.unit in big else ("w3" if k.unit in low else "w4")}
               for k in knobs if "w4" in k.choices}
        plans["w2/w3 mix"] = Plan(mix)
    return plans


def quality(path: Path, workload) -> float:
    session = ort_runner.make_session(path)
    return workload.score(ort_runner.run_batches(session, workload.evaluation)).value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workloads", nargs="*", default=["digits-cnn", "minilm"])
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| workload | plan | size | PTQ quality | QAT quality | QAT steps | QAT time |")
    print("|---|---|---|---|---|---|---|")
    for name in args.workloads:
        workload = load_workload(name)
        config = QATConfig(steps=args.steps or STEPS.get(name, 60))
        with tempfile.TemporaryDirectory() as tmp:
            base = quality(apply_plan(Plan(), workload, Path(tmp) / "float.onnx").path, workload)
            print(f"| {name} | float | | {base:.4f} | | | |")
            for label, plan in aggressive_plans(workload).items():
                ptq_artifact = apply_plan(plan, workload, Path(tmp) / "ptq.onnx")
                ptq = quality(ptq_artifact.path, workload)
                start = time.perf_counter()
                qat_artifact = apply_qat(plan, workload, Path(tmp) / "qat.onnx", config)
                seconds = time.perf_counter() - start
                qat = quality(qat_artifact.path, workload)
                assert qat_artifact.size_bytes == ptq_artifact.size_bytes
                print(f"| {name} | {label} | {ptq_artifact.size_bytes / 1e6:.3f} MB | {ptq:.4f} "
                      f"| {qat:.4f} | {config.steps} | {seconds:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
