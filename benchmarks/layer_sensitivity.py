"""One knob at a time: how much each structural knob alone costs digits-cnn.

Usage: .venv/bin/python benchmarks/layer_sensitivity.py [--model digits-cnn]
Prints unit, knob, value, quality and size for each pruning / low-rank knob set to its
gentlest compressing value, everything else untouched. Why the anchors are quantization-only.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autocompress.api import discover_knobs  # noqa: E402
from autocompress.compression.plan import Plan  # noqa: E402
from autocompress.device_profiles import resolve_target  # noqa: E402
from autocompress.pipeline import Evaluator  # noqa: E402
from autocompress.workloads import load_workload  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="digits-cnn")
    args = parser.parse_args()
    workload = load_workload(args.model)
    evaluator = Evaluator(workload, resolve_target("host"))
    base = evaluator.evaluate(Plan())
    print(f"uncompressed: quality {base.quality:.4f}, {base.size_bytes} bytes")
    print("| unit | knob | value | quality | size (bytes) |")
    print("|---|---|---|---|---|")
    for knob in discover_knobs(workload):
        if knob.name in ("prune_ratio", "rank_ratio"):
            m = evaluator.evaluate(Plan({knob.unit: {knob.name: knob.choices[1]}}))
            print(f"| {knob.unit} | {knob.name} | {knob.choices[1]} | {m.quality:.4f} | {m.size_bytes} |")


if __name__ == "__main__":
    main()
