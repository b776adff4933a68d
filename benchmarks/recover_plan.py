"""Recover trials of a finished run for a chosen number of steps, outside the time box: how
candidates compare after more training than the finalize probes give them.

Usage: .venv/bin/python benchmarks/recover_plan.py RUN_FOLDER --trial 6 --steps 250
       [--trial 3 --steps 370 ...] [--lr 6e-4]

Each (trial, steps) pair is trained exactly as the finalize stage trains (``finalize.qat_config``:
QAT under the plan's stored formats, AdamW, one-cycle, the workload's training set, every
core), built and scored with the run's workload and primary target; prints the quality
details and the wall time of each. ``--lr`` sets another peak learning rate (how
``finalize.LEARNING_RATE`` was chosen). The run's cache (``AUTOCOMPRESS_CACHE``) should be the one
the run used, so the training corpus is not collected again. Writes nothing under results/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402

from autocompress import finalize  # noqa: E402
from autocompress.compression.training import distill  # noqa: E402
from autocompress.compression.plan import Plan  # noqa: E402
from autocompress.device_profiles.profile import resolve_target  # noqa: E402
from autocompress.pipeline import Evaluator  # noqa: E402
from autocompress.search.storage import open_storage  # noqa: E402
from autocompress.workloads import load_workload  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--trial", type=int, action="append", required=True)
    parser.add_argument("--steps", type=int, action="append", required=True)
    parser.add_argument("--lr", type=float, default=None,
                        help="peak learning rate (default: the finalize stage's)")
    args = parser.parse_args()
    if len(args.trial) != len(args.steps):
        raise SystemExit("give one --steps per --trial")
    config = json.loads((args.run / "config.json").read_text())
    study = optuna.load_study(study_name=config["study"], storage=open_storage(
        config["storage"].replace("{run}", str(args.run.resolve()))))
    plans = {t.number: t.user_attrs["plan"] for t in study.get_trials(deepcopy=False)
             if t.user_attrs.get("plan")}
    workload = load_workload(config["model"])
    target = resolve_target(config["target"])
    kind = distill.output_kind(workload)
    with tempfile.TemporaryDirectory(prefix="recover-plan-") as tmp:
        evaluator = Evaluator(workload, target, artifact_root=Path(tmp))
        for trial, steps in zip(args.trial, args.steps):
            if trial not in plans:
                raise SystemExit(f"trial {trial}: no plan in the study of {args.run}")
            plan = Plan.from_dict(plans[trial])
            settings = finalize.qat_config(finalize.FinalizeConfig(), steps, kind)
            if args.lr is not None:
                settings = replace(settings, lr=args.lr)
            start = time.perf_counter()
            _, numbers = evaluator.evaluate_qat(plan, settings, None,
                                                path=Path(tmp) / f"{trial}-{steps}.onnx")
            print(f"trial {trial} ({plan.digest()}), {steps} steps at lr {settings.lr:g}: "
                  f"{json.dumps(numbers['quality_details'])}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
