"""MiniLM int8 files side by side: ORT's quantize_dynamic int8 (per tensor, per channel) and
uniform plans of ours with int8 kernels on every MatMul (issue 13's per-channel comparison).

Usage: .venv/bin/python benchmarks/int8_parity.py [--rounds 5] [--threads 2]
       [--recover-steps 300 [--recover PLAN] [--block-weight 1.0]]
       [--table-blocks 1,8,32,128,0] [--drop-pairs]

Builds the uncompressed MiniLM file, ORT's two int8 recipes from it, and our plans with every
MatMul in ``w8a8cf`` (full-range per-column int8) or ``w8a8c`` (7-bit) and the embedding
tables as 8-bit rows, w4, or the vocabulary cut to the training corpus; and what the 1.5x goal
takes: the ``w8a8cf`` plan with a quarter of the heads and half of the
FFN neurons pruned in every layer ("width"), and with layers 1 and 3 dropped ("dropped"; of
the pairs of layers, these two keep the most untrained; about 1.4x alone) and a quarter of the heads pruned
in the other four ("depth"), untrained and (``--recover-steps N``) one of them (``--recover``,
default depth) after N recovery steps trained as the finalize stage trains
(``finalize.qat_config``; ``--block-weight`` overrides its ``BLOCK_WEIGHT``). Scores each with the
workload's metric (cosine and Spearman to the uncompressed model on the held-out sentences)
and times them round-robin in one process (benchmarks/tight_budget.py's functions). Prints a
table and issue 13's two comparisons. ``--table-blocks`` instead scores (no timing) the
``w8a8cf`` plan with 8-bit tables at each number of rows per scale (0: one per table),
which is how ``quantize.TABLE_BLOCK_ROWS`` was chosen; ``--drop-pairs`` scores (no timing)
that plan with each pair of its six layers dropped, which is how ``DROPPED`` was chosen.
Writes nothing under results/.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time
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


PRUNED = {"width": "ours: w8a8cf, 8-bit tables, heads 1/4 + FFN 1/2 pruned",
          "dropped": "ours: w8a8cf, 8-bit tables, layers 1 and 3 dropped",
          "depth": "ours: w8a8cf, 8-bit tables, layers 1 and 3 dropped, heads 1/4 pruned"}
DROPPED = ("layers.1", "layers.3")


def plans(knobs) -> dict[str, Plan]:
    matmuls = [k.unit for k in knobs if k.name == "quant" and "w8a8cf" in k.choices]
    pruned = [k.unit for k in knobs if k.name == "prune_ratio"]

    def uniform(quant: str, tables: str = "w8", **word) -> Plan:
        units = {m: {"quant": quant} for m in matmuls}
        units["embeddings.word"] = {"quant": tables, **word}
        units["embeddings.position"] = {"quant": tables}
        return Plan(units)

    heavy = uniform("w8a8cf")
    width = Plan({**heavy.units, **{u: {"prune_ratio": 0.25 if u.endswith("attention") else 0.5}
                                    for u in pruned}})
    dropped = Plan({**heavy.units, **{u: {"drop": True} for u in DROPPED}})
    depth = Plan({**dropped.units, **{u: {"prune_ratio": 0.25} for u in pruned
                     if u.endswith("attention") and not u.startswith(DROPPED)}})
    return {"ours: w8a8cf, 8-bit tables": uniform("w8a8cf"),
            "ours: w8a8c, 8-bit tables": uniform("w8a8c"),
            "ours: w8a8cf, 8-bit tables, vocabulary cut": uniform("w8a8cf", vocab="corpus"),
            "ours: w8a8cf, 4-bit tables": uniform("w8a8cf", "w4"),
            PRUNED["width"] + " (untrained)": width,
            PRUNED["dropped"] + " (untrained)": dropped,
            PRUNED["depth"] + " (untrained)": depth}


WORD_ROWS = 30522
"""MiniLM's largest table (its word pieces): a block this long covers every table whole."""


def table_blocks(workload, rows_per_scale: list[int], threads: int) -> None:
    """Size, cosine and Spearman of the ``w8a8cf`` plan per table block size."""
    from autocompress.compression.weights import quantize

    plan = plans(discover_knobs(workload))["ours: w8a8cf, 8-bit tables"]
    chosen = quantize.TABLE_BLOCK_ROWS
    print("| rows per scale | size | cosine | Spearman |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="table-blocks-") as tmp:
        try:
            for rows in rows_per_scale:
                quantize.TABLE_BLOCK_ROWS = rows or WORD_ROWS    # 0: every table one block
                path = apply_plan(plan, workload, Path(tmp) / f"{rows}.onnx").path
                score = tb.score_file(workload, path, threads)
                print(f"| {rows or 'table'} | {path.stat().st_size / 1e6:.3f} MB | "
                      f"{score['cosine']:.5f} | {score['spearman']:.5f} |", flush=True)
        finally:
            quantize.TABLE_BLOCK_ROWS = chosen


def recovered(plan: Plan, workload, steps: int, path: Path,
              block_weight: float | None = None) -> Path:
    """``plan`` after ``steps`` recovery steps, trained as the finalize stage trains (with
    ``block_weight`` instead of ``finalize.BLOCK_WEIGHT`` where given)."""

    from autocompress import finalize
    from autocompress.compression.training import distill
    from autocompress.device_profiles.profile import resolve_target
    from autocompress.pipeline import Evaluator

    path.parent.mkdir(parents=True, exist_ok=True)
    config = finalize.qat_config(finalize.FinalizeConfig(), steps, distill.output_kind(workload))
    if block_weight is not None:
        config = dataclasses.replace(config, block_weight=block_weight)
    evaluator = Evaluator(workload, resolve_target("host"), artifact_root=path.parent)
    start = time.perf_counter()
    trained, _ = evaluator.evaluate_qat(plan, config, None, path=path)
    print(f"{steps} recovery steps: {time.perf_counter() - start:.0f} s", flush=True)
    return trained


def drop_pairs(workload, threads: int) -> None:
    """Cosine and Spearman of the ``w8a8cf`` plan with each pair of layers dropped."""
    knobs = discover_knobs(workload)
    base = plans(knobs)["ours: w8a8cf, 8-bit tables"]
    layers = [k.unit for k in knobs if k.name == "drop"]
    print("| layers dropped | cosine | Spearman |\n|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="drop-pairs-") as tmp:
        for pair in itertools.combinations(layers, 2):
            plan = Plan({**base.units, **{u: {"drop": True} for u in pair}})
            path = apply_plan(plan, workload, Path(tmp) / "model.onnx").path
            scores = tb.score_file(workload, path, threads)
            print(f"| {', '.join(u.split('.')[1] for u in pair)} | {scores['cosine']:.4f} | "
                  f"{scores['spearman']:.4f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recover-steps", type=int, default=0,
                        help="also time and score a pruned plan after this many steps")
    parser.add_argument("--recover", choices=sorted(PRUNED), default="depth",
                        help="which pruned plan the recovery steps train")
    parser.add_argument("--block-weight", type=float, default=None,
                        help="the block-wise term's weight in recovery (default: finalize's)")
    parser.add_argument("--table-blocks", help="rows per table scale to compare, e.g. "
                        "1,8,32,128,0 (0: one per table); scores only, no timing")
    parser.add_argument("--drop-pairs", action="store_true",
                        help="score the w8a8cf plan with each pair of layers dropped; no timing")
    args = parser.parse_args()
    workload = load_workload("minilm")
    if args.drop_pairs:
        return drop_pairs(workload, args.threads)
    if args.table_blocks:
        return table_blocks(workload, [int(r) for r in args.table_blocks.split(",")],
                            args.threads)
    with tempfile.TemporaryDirectory(prefix="int8-parity-") as tmp:
        work = Path(tmp)
        fp32 = apply_plan(Plan(), workload, work / "uncompressed.onnx").path
        candidates = {"uncompressed": {"path": fp32, "source": "uncompressed"}}
        for name in ("ort-int8-uniform", "ort-int8-per-channel"):
            path = work / f"{name}.onnx"
            tb.PEER_RECIPES[name][2](fp32, path)
            candidates[name] = {"path": path, "source": "peer"}
        built = plans(discover_knobs(workload))
        for i, (name, plan) in enumerate(built.items()):
            path = apply_plan(plan, workload, work / f"ours-{i}.onnx").path
            candidates[name] = {"path": path, "source": "run"}
        if args.recover_steps:
            name = PRUNED[args.recover]
            path = recovered(built[name + " (untrained)"], workload, args.recover_steps,
                             work / "recovered" / "pruned.onnx", args.block_weight)
            candidates[f"{name}, {args.recover_steps} recovery steps"] = {
                "path": path, "source": "run"}
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
