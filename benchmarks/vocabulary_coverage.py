"""How much of MiniLM's vocabulary pruning keeps, and how much of the held-out text it covers.

Usage: .venv/bin/python benchmarks/vocabulary_coverage.py

Vocabulary pruning (``vocab: corpus``) keeps the word pieces of the calibration and training
batches (``Workload.vocabulary_batches``); ids never seen there map to ``[UNK]``.
Prints the rows kept of 30,522 and the share of the evaluation sentences' tokens (padding
excluded) that are kept, for calibration alone and for calibration plus the training set.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def token_ids(batches) -> set[int]:
    return {int(i) for b in batches for i in b["input_ids"][b["attention_mask"] > 0]}


def main() -> None:
    import numpy as np

    from autocompress.workloads.minilm import make_minilm_workload

    workload = make_minilm_workload()
    evaluation = np.concatenate([b["input_ids"][b["attention_mask"] > 0]
                                 for b in workload.evaluation])
    rows = workload.model.embeddings.word.num_embeddings
    print("| kept from | rows kept | of | held-out tokens covered |")
    print("|---|---|---|---|")
    for name, batches in (("calibration", workload.calibration),
                          ("calibration + training", workload.vocabulary_batches())):
        kept = token_ids(batches) | {workload.vocab_fallback_id}
        covered = float(np.isin(evaluation, list(kept)).mean())
        print(f"| {name} | {len(kept)} | {rows} | {covered:.2%} |")


if __name__ == "__main__":
    main()
