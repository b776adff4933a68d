"""Each torch-side structural technique alone, at two strengths, on the built-in workloads.

Usage: .venv/bin/python benchmarks/torch_techniques.py [--model digits-cnn minilm] [--only drop]
Prints one markdown row per plan: artifact size, parameters, host latency (ONNX Runtime,
median of the pipeline's timing config), quality, and the seconds the torch stage took.
Techniques a workload does not offer are listed with the reason (``skipped_knobs``).
Distillation rows show it alone and as recovery after dropping blocks. The third default
model, a plain 3x3-conv net (tests/conv_workload.py), is where decomposition and
depthwise-separable replacing have convolutions to act on.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from autocompress.api import discover_knobs  # noqa: E402
from autocompress.compression.knobs import skipped_knobs  # noqa: E402
from autocompress.compression.plan import (DECOMP, DISTILL_STEPS, DROP, REPLACE, SHARE,  # noqa: E402
                                           WHOLE_MODEL, Plan)
from autocompress.device_profiles import resolve_target  # noqa: E402
from autocompress.pipeline import Evaluator  # noqa: E402
from autocompress.workloads import load_workload  # noqa: E402


MINE = ("depth pruning", "parameter sharing", "tensor decomposition", "module replacing")


def plans(knobs) -> list[tuple[str, str, Plan]]:
    """(technique, strength, plan) rows built from the knobs the workload really offers."""
    by_name: dict[str, list] = {}
    for knob in knobs:
        by_name.setdefault(knob.name, []).append(knob)
    rows = []
    drops = [k.unit for k in by_name.get(DROP, [])]
    if drops:
        rows.append(("depth", f"drop {drops[-1]}", Plan({drops[-1]: {DROP: True}})))
        every_other = drops[-1::-2][::-1]
        rows.append(("depth", f"drop {len(every_other)} of {len(drops)} blocks",
                     Plan({u: {DROP: True} for u in every_other})))
    shares = [k.unit for k in by_name.get(SHARE, [])]
    if shares:
        rows.append(("sharing", f"{shares[0]} shares", Plan({shares[0]: {SHARE: True}})))
        odd = shares[::2]
        rows.append(("sharing", f"{len(odd)} blocks share", Plan({u: {SHARE: True} for u in odd})))
    for knob in by_name.get(DECOMP, []):
        for choice in knob.choices[1:]:
            rows.append(("decomposition", f"{knob.unit} {choice}", Plan({knob.unit: {DECOMP: choice}})))
    replaceable = by_name.get(REPLACE, [])
    for choice in sorted({c for k in replaceable for c in k.choices[1:]}):
        units = [k.unit for k in replaceable if choice in k.choices]
        if choice == "dwsep" and len(units) > 1:
            rows.append(("replacing", f"dwsep on {units[-1]}", Plan({units[-1]: {REPLACE: choice}})))
        rows.append(("replacing", f"{choice} on {len(units)} unit(s)",
                     Plan({u: {REPLACE: choice} for u in units})))
    if DISTILL_STEPS in by_name:
        steps = by_name[DISTILL_STEPS][0].choices[1:]
        for n in steps:
            rows.append(("distillation", f"{n} steps alone", Plan({WHOLE_MODEL: {DISTILL_STEPS: n}})))
        if drops:   # recovery after the strongest structural change the model offers
            label, damage = f"{len(every_other)} blocks dropped", {u: {DROP: True} for u in every_other}
        elif replaceable:
            units = [k.unit for k in replaceable]
            label, damage = f"{len(units)} units replaced", {u: {REPLACE: "dwsep"} for u in units}
        else:
            label, damage = "", {}
        for n in (0, *steps) if damage else ():
            units = dict(damage)
            if n:
                units[WHOLE_MODEL] = {DISTILL_STEPS: n}
            rows.append(("distillation", f"{label} + {n} steps", Plan(units)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", nargs="+",
                        default=["digits-cnn", "minilm", "tests.conv_workload:make_workload"])
    parser.add_argument("--only", help="run only rows of this technique")
    args = parser.parse_args()
    torch.set_num_threads(2)
    for name in args.model:
        workload = load_workload(name)
        example = [torch.from_numpy(workload.example[n]) for n in workload.input_names]
        with tempfile.TemporaryDirectory() as tmp:
            evaluator = Evaluator(workload, resolve_target("host"), artifact_root=Path(tmp))
            base = evaluator.evaluate(Plan())
            print(f"\n### {name}: uncompressed {base.size_bytes} bytes, {base.n_params} params, "
                  f"{base.host_latency['median_s'] * 1e3:.2f} ms, {base.quality_metric} {base.quality:.4f}\n")
            print("| technique | strength | size (bytes) | params | host latency (ms) | quality | torch stage (s) |")
            print("|---|---|---|---|---|---|---|")
            for technique, strength, plan in plans(discover_knobs(workload)):
                if args.only and args.only != technique:
                    continue
                m = evaluator.evaluate(plan)
                print(f"| {technique} | {strength} | {m.size_bytes} | {m.n_params} | "
                      f"{m.host_latency['median_s'] * 1e3:.2f} | {m.quality:.4f} | "
                      f"{m.timings_s.get('apply', float('nan')):.1f} |", flush=True)
        techniques = {t: set() for t in MINE}
        for skip in skipped_knobs(workload.model, example):
            if skip.technique in MINE:
                techniques[skip.technique].add(skip.reason)
        offered = {k.technique for k in discover_knobs(workload)}
        for technique, reasons in sorted(techniques.items()):
            if technique not in offered:
                why = "; ".join(sorted(reasons)) or "no candidate layers"
                print(f"- {technique}: not offered on {name} ({why})")


if __name__ == "__main__":
    main()
