"""MiniLM int8 files side by side: ORT's quantize_dynamic int8 (per tensor, per channel) and
uniform plans of ours with int8 kernels on every MatMul (issue 13's per-channel comparison).

Usage: .venv/bin/python benchmarks/int8_parity.py [--rounds 5] [--threads 2]

Builds the uncompressed MiniLM file, ORT's two int8 recipes from it, and our plans with every
MatMul in ``w8a8cf`` (full-range per-column int8) or ``w8a8c`` (7-bit) and the embedding
tables as int8 rows, w4, or the vocabulary cut to the training corpus; scores each with the
workload's metric (cosine and Spearman to the uncompressed model on the held-out sentences)
and times them round-robin in one process (benchmarks/tight_budget.py's functions). Prints a
table and issue 13's two comparisons. Writes nothing under results/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import tight_budget as tb  # noqa: E402

from autocompress.api import discover_knobs  # noqa: E402
from autocompress.compression.apply import apply_plan  # noqa: E402
from autocompress.compression.plan import Plan  # noqa: E402
from autocompress.workloads import load_workload  # noqa: E402


def plans(knobs) -> dict[str, Plan]:
    matmuls = [k.unit for k in knobs if k.name == "quant" and "w8a8cf" in k.choices]

    def uniform(quant: str, tables: str = "w8", **word) -> Plan:
        units = {m: {"quant": quant} for m in matmuls}
        units["embeddings.word"] = {"quant": tables, **word}
        units["embeddings.position"] = {"quant": tables}
        return Plan(units)

    return {"ours: w8a8cf, int8 tables": uniform("w8a8cf"),
            "ours: w8a8c, int8 tables": uniform("w8a8c"),
            "ours: w8a8cf, int8 tables, vocabulary cut": uniform("w8a8cf", vocab="corpus"),
            "ours: w8a8cf, 4-bit tables": uniform("w8a8cf", "w4")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    workload = load_workload("minilm")
    with tempfile.TemporaryDirectory(prefix="int8-parity-") as tmp:
        work = Path(tmp)
        fp32 = apply_plan(Plan(), workload, work / "uncompressed.onnx").path
        candidates = {"uncompressed": {"path": fp32, "source": "uncompressed"}}
        for name in ("ort-int8-uniform", "ort-int8-per-channel"):
            path = work / f"{name}.onnx"
            tb.PEER_RECIPES[name][2](fp32, path)
            candidates[name] = {"path": path, "source": "peer"}
        for i, (name, plan) in enumerate(plans(discover_knobs(workload)).items()):
            path = apply_plan(plan, workload, work / f"ours-{i}.onnx").path
            candidates[name] = {"path": path, "source": "run"}
        rows = tb.measure_candidates(workload, candidates, args.rounds, args.threads)
    print(f"load average at the end: {os.getloadavg()}")
    print("| file | size | cosine | Spearman | host latency | vs ORT uniform int8 |")
    print("|---|---|---|---|---|---|")
    for r in rows.values():
        print(f"| {r['name']} | {r['size_bytes'] / 1e6:.2f} MB | {r['cosine']:.4f} | "
              f"{r['spearman']:.4f} | {r['latency_s'] * 1e3:.2f} ms | "
              f"{r['vs_ort_int8_uniform']:.3f}x |")
    print(json.dumps(tb.comparisons(rows), indent=1, default=str))


if __name__ == "__main__":
    main()
