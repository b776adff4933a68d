"""Command line: parses, calls the library (autocompress.api), prints. No logic of its own."""
from __future__ import annotations

import argparse
import os
import sys
import time

from rich.console import Console

EXIT_USAGE = 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autocompress", description="Hardware-aware automated model compression.")
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", help="search compression plans for a target")
    search.add_argument("--model", default="minilm",
                        help="minilm (default) | digits-cnn | path/to/model.onnx | package.module:function")
    search.add_argument("--target", default="jetson-nano", help="device profile name (see `autocompress targets`)")
    search.add_argument("--profile", help="path to a device profile JSON file (replaces --target)")
    search.add_argument("--budget", help="max artifact size: 4MB (10^6 bytes), 4MiB (2^20), 4000KB, 4e6")
    search.add_argument("--max-latency", help="max latency on the target, e.g. 30ms")
    search.add_argument("--max-energy", help="max energy per inference on the target, e.g. 50mJ")
    search.add_argument("--min-quality", type=float, help="minimum quality (the workload's metric)")
    search.add_argument("--trials", type=int, default=20, help="number of trials (default 20)")
    search.add_argument("--timeout", help="stop starting trials after this long, e.g. 600s")
    search.add_argument("--trial-timeout", default="600s", help="per-trial limit (default 600s)")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--out", help="run folder (default results/<run-id>)")
    search.add_argument("--storage", help="Optuna storage URL (default: SQLite in the run folder)")
    search.add_argument("--resume", metavar="RUN", help="continue the search in run folder RUN")

    commands.add_parser("targets", help="list the device profiles")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    argv = sys.argv[1:] if argv is None else argv
    args = _build_parser().parse_args(argv)
    console = Console()
    try:
        if args.command == "targets":
            return _targets(console)
        return _search(args, argv, console)
    except KeyboardInterrupt:
        print("autocompress: interrupted; resume with --resume <run folder>", file=sys.stderr)
        return 130
    except Exception as err:
        from .api import InfeasibleError, RunError
        from .compression.apply import PlanError
        from .device_profiles import ProfileError
        from .units import UnitError
        from .workloads import WorkloadError

        if isinstance(err, (UnitError, ProfileError, WorkloadError, RunError, PlanError,
                            InfeasibleError)):
            where = f" (run folder: {err.run_dir})" if isinstance(err, InfeasibleError) else ""
            print(f"autocompress: error: {err}{where}", file=sys.stderr)
            return EXIT_USAGE
        raise


def _search(args, argv, console: Console) -> int:
    from . import api
    from .report.table import front_table
    from .search.objectives import Budget
    from .units import parse_energy, parse_size, parse_time

    if args.trials < 1:
        raise api.RunError("--trials must be at least 1")
    progress = SearchProgress(console)
    if args.resume:
        result = api.resume(args.resume, progress=progress,
                            trials=args.trials if "--trials" in argv else None)
    else:
        budget = Budget(
            max_size_bytes=parse_size(args.budget) if args.budget else None,
            max_latency_s=parse_time(args.max_latency) if args.max_latency else None,
            max_energy_j=parse_energy(args.max_energy) if args.max_energy else None,
            min_quality=args.min_quality)
        config = api.SearchConfig(
            model=args.model, target=args.target, profile=args.profile, budget=budget,
            trials=args.trials, timeout_s=parse_time(args.timeout) if args.timeout else None,
            trial_timeout_s=parse_time(args.trial_timeout), seed=args.seed, out=args.out,
            storage=args.storage, command=["autocompress", *argv])
        if args.budget:
            console.print(f"budget: {args.budget} = {budget.max_size_bytes:,} bytes "
                          "(MB/KB/GB are powers of 10; MiB/KiB/GiB powers of 2)")
        result = api.search(config, progress=progress)
    progress.stop()
    console.print(front_table(result.document))
    console.print(f"run folder: {result.run_dir}  (pareto.json, artifacts/)")
    return 0


class SearchProgress:
    """Rich progress bar: trials done, ETA, best feasible point so far."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = None
        self.best = "none feasible yet"

    def start(self, total: int, done: int) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[best]}"), console=self.console)
        self.task = self.progress.add_task("search", total=total, completed=done, best=self.best)
        self.progress.start()

    def __call__(self, study, trial) -> None:
        from .search.pareto import is_feasible
        from .units import format_size

        if trial.values is not None and is_feasible(trial):
            best = max((t for t in study.best_trials if is_feasible(t)),
                       key=lambda t: t.values[0], default=None)
            if best is not None:
                self.best = (f"best feasible: quality {best.values[0]:.4f}, "
                             f"{format_size(best.values[2])}")
        if self.progress is not None:
            self.progress.update(self.task, advance=1, best=self.best)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _targets(console: Console) -> int:
    from rich.table import Table

    from .device_profiles import known_targets, resolve_target
    from .units import format_size

    table = Table(title="device profiles")
    table.add_column("name", no_wrap=True)
    for column in ("unit", "TVM target", "fp32 / int8 peak", "bandwidth", "RAM",
                   "power idle/typ/max W"):
        table.add_column(column)
    for name in known_targets():
        p = resolve_target(name)
        target = p.tvm_target if isinstance(p.tvm_target, str) else p.tvm_target.get("kind", "json")
        table.add_row(p.name, p.compute_unit, str(target),
                      f"{p.peak_ops_per_s['fp32'] / 1e9:.0f} / {p.peak_ops_per_s['int8'] / 1e9:.0f} GOPS",
                      f"{p.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s", format_size(p.ram_bytes),
                      f"{p.power_w['idle']}/{p.power_w['typical']}/{p.power_w['max']}")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
