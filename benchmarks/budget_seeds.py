"""The budget seeds a search would queue: what each plan does, per kind of unit, how many
parameters it trains and what one recovery step costs (the finalize stage's step count is its
box over that).

Usage: .venv/bin/python benchmarks/budget_seeds.py [--model minilm] [--target jetson-nano]
       [--budget 4MB | none] [--max-latency 3ms] [--max-energy 50mJ] [--cost predicted]
       [--no-timing] [--artifacts DIR]

Uses the cached sensitivity analysis (computed first when the cache has none, as ``search``
does) and ``budget_plans.directed`` over every knob of the model, as ``search`` calls it; each seed's seconds per step are ``finalize.seconds_per_step`` (a few QAT steps, every
core). Prints one block per seed; writes nothing under results/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autocompress import budget_plans, finalize  # noqa: E402
from autocompress import sensitivity as sens  # noqa: E402
from autocompress.api import discover_knobs  # noqa: E402
from autocompress.compression.apply import compress_torch  # noqa: E402
from autocompress.device_profiles.profile import resolve_target  # noqa: E402
from autocompress.pipeline import Evaluator  # noqa: E402
from autocompress.search.budget_solver import kind_of  # noqa: E402
from autocompress.search.objectives import Budget  # noqa: E402
from autocompress.units import parse_energy, parse_size, parse_time  # noqa: E402
from autocompress.workloads import load_workload  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--target", default="jetson-nano")
    parser.add_argument("--budget", default="4MB", help="max size, or none")
    parser.add_argument("--max-latency", help="max latency on the target, e.g. 3ms")
    parser.add_argument("--max-energy", help="max energy per inference, e.g. 50mJ")
    parser.add_argument("--cost", default="auto", choices=("measured", "predicted", "auto"),
                        help="as search --cost: predicted keeps the host's latency predicted")
    parser.add_argument("--no-timing", action="store_true", help="skip the seconds per step")
    parser.add_argument("--artifacts", type=Path, help="where the seeds' builds go "
                        "(default: a temporary folder)")
    args = parser.parse_args()
    workload = load_workload(args.model)
    knobs = discover_knobs(workload)
    start = time.perf_counter()
    analysis = sens.analyse(workload, knobs)
    print(f"sensitivity: {time.perf_counter() - start:.0f} s (0: from the cache)")
    with tempfile.TemporaryDirectory(prefix="budget-seeds-") as tmp:
        root = args.artifacts or Path(tmp)
        evaluator = Evaluator(workload, resolve_target(args.target), artifact_root=root,
                              cost=args.cost)
        budget = Budget(
            max_size_bytes=None if args.budget == "none" else parse_size(args.budget),
            max_latency_s=parse_time(args.max_latency) if args.max_latency else None,
            max_energy_j=parse_energy(args.max_energy) if args.max_energy else None)
        plans = budget_plans.directed(knobs, analysis, budget, evaluator, distilled=False)
        print(f"uncompressed: {json.dumps(plans.record.get('uncompressed'))}")
        print(f"format savings: {json.dumps(plans.record.get('format_savings'))}")
        for solution in plans.record["solutions"]:
            built = [{r: f"{v:.4g}" for r, v in a.get("measured", {}).items()}
                     for a in solution["attempts"]]
            print(f"solution at {solution['fraction']:.2f} of the budget, "
                  f"{solution.get('shape', 'coarse' if solution['coarse'] else 'per unit')}, start "
                  f"{solution.get('start')}: built {built}")
        config = finalize.FinalizeConfig()
        for params in plans.seeds:
            plan = budget_plans.plan_of(params, knobs)
            kinds = Counter((kind_of(unit), name, json.dumps(value))
                            for unit, chosen in plan.units.items()
                            for name, value in chosen.items())
            trained = sum(p.numel() for p in compress_torch(plan, workload).parameters())
            per_step = (finalize.seconds_per_step(plan, workload, config)
                        if workload.model is not None and not args.no_timing else float("nan"))
            print(f"\nseed {plan.digest()}: {trained / 1e6:.2f} M parameters, "
                  f"{per_step:.2f} s per recovery step")
            for (kind, name, value), count in sorted(kinds.items()):
                print(f"  {kind:28s} {name:12s} {value:10s} x{count}")


if __name__ == "__main__":
    main()
