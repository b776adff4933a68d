"""Same plans, same bytes, across a refactor: each workload's knobs, skips and the artifact
sha256 of seeded random plans, one line each, so two checkouts can be diffed.

Usage: .venv/bin/python benchmarks/plan_bytes.py [--source DIR] [--plans 12]
           [--model tests.tiny_workload:make_workload tests.conv_workload:make_workload digits-cnn]

``--source`` imports autocompress from another checkout (e.g. ``git worktree add /tmp/old
<commit>``), so the same seeded plans are built by old and new code; diff the two outputs.
Each plan sets each offered knob with probability 0.35 to a random choice (distillation
capped at 50 steps). Plans are the same on both sides when the knobs are.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(ROOT), help="checkout to import autocompress from")
    parser.add_argument("--plans", type=int, default=12)
    parser.add_argument("--model", nargs="+", default=["tests.tiny_workload:make_workload",
                                                       "tests.conv_workload:make_workload",
                                                       "digits-cnn"])
    args = parser.parse_args()
    sys.path[:0] = [args.source, str(ROOT)]   # tests.* workloads come from this checkout
    import torch

    import autocompress
    from autocompress.api import discover_knobs, discover_skips
    from autocompress.compression.apply import apply_plan
    from autocompress.compression.plan import Plan
    from autocompress.workloads import load_workload

    assert Path(autocompress.__file__).resolve().is_relative_to(Path(args.source).resolve())
    torch.set_num_threads(2)
    for spec in args.model:
        workload = load_workload(spec)
        knobs = discover_knobs(workload)
        print("KNOBS", spec, json.dumps([[k.key, list(map(str, k.choices)), k.technique]
                                         for k in knobs]), flush=True)
        print("SKIPS", spec, json.dumps(sorted(f"{s.technique}|{s.unit}|{s.reason}"
                                               for s in discover_skips(workload))))
        rng = random.Random(0)
        with tempfile.TemporaryDirectory() as folder:
            for i in range(args.plans):
                units: dict = {}
                for knob in knobs:
                    if rng.random() < 0.35:
                        choice = rng.choice(knob.choices)
                        if choice != knob.choices[0]:
                            units.setdefault(knob.unit, {})[knob.name] = choice
                if units.get("", {}).get("distill_steps"):
                    units[""]["distill_steps"] = 50
                plan = Plan(units)
                try:
                    artifact = apply_plan(plan, workload, Path(folder) / f"{i}.onnx")
                    result = f"{artifact.sha256[:16]} {artifact.size_bytes}"
                except Exception as err:   # noqa: BLE001 - a plan that fails fails on both sides
                    result = f"ERR {type(err).__name__}: {str(err)[:100]}"
                print("PLAN", spec, i, plan.digest(), result, flush=True)


if __name__ == "__main__":
    main()
