"""Command line: parses, calls the library (autocompress.api), prints. No logic of its own."""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console

EXIT_USAGE = 2
EXIT_INTERNAL = 1


def _debug_flag(parser: argparse.ArgumentParser, default=False) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help="print the traceback behind an error (default: one line)")


def _onnx_input_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="PATH", help="ONNX files: real inputs, an .npz of "
                        "arrays keyed by input name (or a folder of them); split into disjoint "
                        "calibration and evaluation sets")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=1x3x48x320",
                        help="ONNX files without --data: the shape of an input with free "
                        "dimensions (repeat per input)")
    parser.add_argument("--metric", help="ONNX files: cosine (outputs' cosine to the original) "
                        "| top1 (argmax agreement; the default for [N, classes] outputs) | "
                        "package.module:function(outputs, reference) -> float")


def _onnx_inputs(args) -> dict:
    """The ONNX-file input flags as keyword arguments (absent on resume: config.json has them)."""
    return {"data": str(Path(args.data).resolve()) if args.data else None,
            "input_shapes": list(args.input_shape), "metric": args.metric}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autocompress", description="Hardware-aware automated model compression.")
    _debug_flag(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", help="search compression plans for a target")
    search.add_argument("--model", default="minilm",
                        help="minilm (default) | digits-cnn | path/to/model.onnx | package.module:function")
    _onnx_input_flags(search)
    search.add_argument("--target", default="jetson-nano", help="device profile name (see `autocompress targets`); a,b,c: one search, a front per target")
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
    search.add_argument("--study", default="autocompress",
                        help="study name in --storage (default autocompress): several searches "
                             "can share one database")
    search.add_argument("--resume", metavar="RUN", help="continue the search in run folder RUN")
    search.add_argument("--rpc-tracker", metavar="HOST:PORT",
                        help="TVM RPC tracker: measure candidates on the boards registered there")
    search.add_argument("--rpc-key", help="device key of the boards at the tracker (e.g. pi4)")
    search.add_argument("--no-sensitivity", action="store_true",
                        help="skip the per-layer sensitivity analysis that prunes catastrophic "
                             "choices and seeds the search")
    search.add_argument("--no-multi-fidelity", action="store_true",
                        help="evaluate every candidate with its full training budget (default: "
                             "a proxy with a quarter of it first, full only if promising)")
    search.add_argument("--cost", choices=("measured", "predicted", "auto"), default="auto",
                        help="target numbers: measured (host or --rpc-tracker board), predicted "
                        "(calibrated cost model), auto (measure when reachable; default)")
    search.add_argument("--finalize", metavar="DURATION",
                        help="time box of the finalize stage after the search: long recovery "
                             "training (QAT on the training set) of the most promising "
                             "candidates within the budget (default: 20m when --budget, "
                             "--max-latency or --max-energy is given, else off; 0: off)")
    search.add_argument("--workers", type=int, default=1,
                        help="worker processes on this machine, this one included (default 1); "
                        "other machines join with `autocompress worker`")
    _debug_flag(search, argparse.SUPPRESS)

    commands.add_parser("targets", help="list the device profiles")
    techniques = commands.add_parser("techniques", help="list the compression techniques and "
                                     "their knobs (with --model: what that model offers)")
    techniques.add_argument("--model", help="also list this model's knobs and skipped layers")
    _onnx_input_flags(techniques)
    _add_device_commands(commands)
    _add_worker_command(commands)
    _add_after_search_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    command_line, argv = argv is None, sys.argv[1:] if argv is None else argv
    args = _build_parser().parse_args(argv)
    from . import crash_note, supervisor

    if command_line and supervisor.wanted(args.command):
        return supervisor.run(argv)   # the work runs in a child this process watches
    if crash_note.adopt():
        crash_note.end_with_parent(crash_note.supervised())
    console = Console()
    try:
        if args.command == "targets":
            return _targets(console)
        if args.command == "techniques":
            return _techniques(args, console)
        if args.command in ("profile", "rpc-server"):
            return {"profile": _profile, "rpc-server": _rpc_server}[args.command](args, console)
        if args.command in ("report", "plan", "export"):
            return {"report": _report, "plan": _plan, "export": _export}[args.command](
                args, argv, console)
        if args.command == "worker":
            return _worker(args, console)
        return _search(args, argv, console)
    except KeyboardInterrupt:
        print("autocompress: interrupted; resume with --resume <run folder>", file=sys.stderr)
        return 130
    except Exception as err:
        return _error(err, getattr(args, "debug", False))


def _error(err: Exception, debug: bool) -> int:
    """One line on stderr: exit 2 for a user error, 1 for a bug; ``--debug`` adds the
    traceback (with the user code's own error where a workload factory failed)."""
    if debug:
        traceback.print_exception(err)
    from .api import InfeasibleError, RunError
    from .export import ExportError
    from .report.run import ReportError
    from .compression.apply import PlanError
    from .device_profiles import ProfileError
    from .backends.tvm_compile import TvmError
    from .backends.tvm_rpc import RpcError
    from .units import UnitError
    from .workloads import WorkloadError
    from .search.storage import StorageError

    if isinstance(err, (UnitError, ProfileError, WorkloadError, RunError, PlanError,
                        InfeasibleError, ReportError, ExportError, RpcError, TvmError,
                        StorageError)):
        where = f" (run folder: {err.run_dir})" if isinstance(err, InfeasibleError) else ""
        print(f"autocompress: error: {err}{where}", file=sys.stderr)
        return EXIT_USAGE
    line = (str(err).strip().splitlines() or [""])[0][:300]
    print(f"autocompress: internal error: {type(err).__name__}: {line}"
          + ("" if debug else " (run again with --debug for the traceback)"), file=sys.stderr)
    return EXIT_INTERNAL


def _search(args, argv, console: Console) -> int:
    from . import api
    from .report.table import front_table
    from .units import parse_duration, parse_time

    if args.trials < 1:
        raise api.RunError("--trials must be at least 1")
    progress = SearchProgress(console)
    try:   # a live bar left running would garble the one-line error that follows
        if args.resume:
            result = api.resume(args.resume, progress=progress,
                                trials=args.trials if "--trials" in argv else None,
                                n_workers=args.workers if "--workers" in argv else None)
        else:
            budget = _budget(args)
            config = api.SearchConfig(
                model=args.model, target=args.target, profile=args.profile, budget=budget,
                trials=args.trials,
                timeout_s=parse_time(args.timeout) if args.timeout is not None else None,
                trial_timeout_s=parse_time(args.trial_timeout), seed=args.seed, out=args.out,
                storage=args.storage, command=["autocompress", *argv],
                rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key,
                sensitivity=not args.no_sensitivity, multi_fidelity=not args.no_multi_fidelity, workers=args.workers,
                cost=args.cost, study=args.study, finalize_s=parse_duration(args.finalize) if args.finalize is not None else None,
                **_onnx_inputs(args))
            if args.budget is not None:
                console.print(f"budget: {args.budget} = {budget.max_size_bytes:,} bytes "
                              "(MB/KB/GB are powers of 10; MiB/KiB/GiB powers of 2)")
            result = api.search(config, progress=progress)
    finally:
        progress.stop()
    verdict = (result.document.get("verdict") or {}).get("message")
    if verdict:
        console.print(verdict, style="bold yellow", markup=False, highlight=False)
    console.print(front_table(result.document))
    for target in list(result.document.get("fronts", {}))[1:]:
        console.print(front_table(result.document, target))
    console.print(f"run folder: {result.run_dir}  (pareto.json, artifacts/)")
    return 0


def _budget(args):
    """The constraints from the flags; an empty value (``--budget ""``) is refused like any
    other that does not parse, never read as "no budget"."""
    from .search.objectives import Budget
    from .units import parse_energy, parse_size, parse_time

    return Budget(
        max_size_bytes=parse_size(args.budget) if args.budget is not None else None,
        max_latency_s=parse_time(args.max_latency) if args.max_latency is not None else None,
        max_energy_j=parse_energy(args.max_energy) if args.max_energy is not None else None,
        min_quality=args.min_quality)


class SearchProgress:
    """Rich progress bar: trials done, ETA, best feasible point so far."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = None
        self.best = "none feasible yet"

    def note(self, text: str) -> None:
        self.console.print(text)

    def sensitivity(self, done: int, total: int) -> None:
        """The per-layer sensitivity analysis, knob by knob (minutes on a large model)."""
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        if getattr(self, "sensitivity_bar", None) is None:
            self.sensitivity_bar = Progress(
                TextColumn("sensitivity"), BarColumn(), MofNCompleteColumn(), TextColumn("knobs"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console)
            self.sensitivity_task = self.sensitivity_bar.add_task("sensitivity", total=total)
            self.sensitivity_bar.start()
        self.sensitivity_bar.update(self.sensitivity_task, completed=done)
        if done >= total:      # one live display at a time: the trials' bar comes next
            self.sensitivity_bar.stop()
            self.sensitivity_bar = None
            self.console.print("timing each weight format against float on this host")

    def start(self, total: int, done: int) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[best]}"), console=self.console)
        self.task = self.progress.add_task("search", total=total, completed=done, best=self.best)
        self.progress.start()

    def __call__(self, study, trial) -> None:
        from optuna.trial import TrialState

        from .search.pareto import is_feasible
        from .search.study import finished_count
        from .units import format_size

        if trial.state == TrialState.FAIL:   # one line; plan and traceback in RUN/search.log
            reason = trial.user_attrs.get("fail_reason", "unknown")
            self.console.print(f"trial {trial.number} failed: {reason} (details: search.log "
                               "in the run folder)", markup=False, highlight=False)
        if trial.values is not None and is_feasible(trial):
            best = max((t for t in study.best_trials if is_feasible(t)),
                       key=lambda t: t.values[0], default=None)
            if best is not None:
                self.best = (f"best feasible: quality {best.values[0]:.4f}, "
                             f"{format_size(best.values[2])}")
        if self.progress is not None:
            # every worker's trials count, not only this process's
            self.progress.update(self.task, completed=finished_count(study), best=self.best)

    def stop(self) -> None:
        for bar in (self.progress, getattr(self, "final_bar", None),
                    getattr(self, "sensitivity_bar", None)):
            if bar is not None:
                bar.stop()
        self.progress = self.final_bar = self.sensitivity_bar = None

    def finalize(self, what: str, fraction: float, quality: float | None) -> None:
        """The finalize stage: time box used, what trains now, the latest recovered quality."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        if getattr(self, "final_bar", None) is None:
            self.final_bar = Progress(TextColumn("finalize"), BarColumn(), TimeElapsedColumn(),
                                      TextColumn("ETA"), TimeRemainingColumn(),
                                      TextColumn("{task.fields[what]}  {task.fields[quality]}"),
                                      console=self.console)
            self.final_task = self.final_bar.add_task("finalize", total=1000, what="",
                                                      quality="")
            self.final_bar.start()
        if quality is not None:
            self.final_quality = f"recovered quality {quality:.4f}"
        self.final_bar.update(self.final_task, completed=int(1000 * fraction), what=what,
                              quality=getattr(self, "final_quality", ""))


def _add_after_search_commands(commands) -> None:
    """report / plan / export: what users reach for once a search has run."""
    report = commands.add_parser("report", help="HTML report, PNG plots and Markdown summary of a run")
    report.add_argument("run", help="run folder (results/<run-id>)")
    report.add_argument("--out", help="output folder (default RUN/report)")

    plan = commands.add_parser("plan", help="which device profiles can host the model within a budget")
    _onnx_input_flags(plan)
    plan.add_argument("--model", default="minilm",
                      help="minilm (default) | digits-cnn | path/to/model.onnx | package.module:function")
    plan.add_argument("--budget", help="max artifact size: 4MB (10^6 bytes), 4MiB (2^20)")
    plan.add_argument("--max-latency", help="max latency on each target, e.g. 30ms")
    plan.add_argument("--max-energy", help="max energy per inference on each target, e.g. 50mJ")
    plan.add_argument("--min-quality", type=float, help="minimum quality (the workload's metric)")
    plan.add_argument("--targets", help="comma-separated profiles (default: every known one)")
    plan.add_argument("--trials", type=int, default=20, help="number of trials (default 20)")
    plan.add_argument("--timeout", help="stop starting trials after this long, e.g. 600s")
    plan.add_argument("--trial-timeout", default="600s", help="per-trial limit (default 600s)")
    plan.add_argument("--seed", type=int, default=0)
    plan.add_argument("--out", help="run folder (default results/<time>-<model>-plan)")

    export = commands.add_parser("export", help="write and check the deployable artifact of one trial")
    export.add_argument("run", help="run folder (results/<run-id>)")
    export.add_argument("--pick", type=int, required=True, help="trial id (a front point's id)")
    export.add_argument("--format", choices=("onnx", "tvm"), default="onnx")
    export.add_argument("--target", help="device profile (default: the run's target)")
    export.add_argument("--out", help="output folder (default RUN/export/<id>-<format>-<target>)")


def _report(args, argv, console: Console) -> int:
    from .report.build import write_report

    files = write_report(args.run, args.out)
    console.print(f"report: {files.html}\nsummary: {files.markdown}\nplots: "
                  + ", ".join(str(p) for p in files.pngs.values()))
    return 0


def _plan(args, argv, console: Console) -> int:
    from .api import RunError
    from .planning import PlanConfig, plan, rows_table
    from .units import parse_duration, parse_time

    if args.trials < 1:
        raise RunError("--trials must be at least 1")
    budget = _budget(args)
    config = PlanConfig(
        model=args.model, budget=budget, trials=args.trials, seed=args.seed, out=args.out,
        targets=[t.strip() for t in args.targets.split(",")] if args.targets else (),
        timeout_s=parse_time(args.timeout) if args.timeout is not None else None,
        trial_timeout_s=parse_time(args.trial_timeout), command=["autocompress", *argv],
        **_onnx_inputs(args))
    progress = SearchProgress(console)
    try:
        result = plan(config, progress=progress)
    finally:
        progress.stop()
    console.print(rows_table(result.rows, budget))
    console.print(f"run folder: {result.run_dir}  (plan.json; `autocompress report "
                  f"{result.run_dir}` adds this table to the report)")
    if not result.any_feasible:
        print("autocompress: error: no target meets the constraints (see the table above; "
              f"run folder: {result.run_dir})", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _export(args, argv, console: Console) -> int:
    from .export import export

    result = export(args.run, args.pick, args.format, args.target, args.out)
    console.print(f"exported trial {args.pick} for {result.target} to {result.out_dir}: "
                  + ", ".join(p.name for p in result.files.values()))
    console.print(f"checked: artifact sha256 matches the search's record; quality "
                  f"{result.quality:.6f} re-measured = {result.recorded_quality:.6f} recorded")
    return 0


def _targets(console: Console) -> int:
    from rich.table import Table

    from .device_profiles import known_targets, resolve_target
    from .units import format_size

    table = Table(title="device profiles (sources: autocompress/device_profiles/*.json)")
    table.add_column("name", no_wrap=True)
    for column in ("unit", "cores @ GHz", "TVM target", "toolchain", "fp32/fp16/int8 GOPS",
                   "GB/s", "RAM", "W idle/typ/max"):
        table.add_column(column, overflow="fold")
    for name in known_targets():
        p = resolve_target(name)
        target = p.tvm_target if isinstance(p.tvm_target, str) else \
            "{" + ", ".join(f"{k}: {v}" for k, v in p.tvm_target.items() if k in ("kind", "mcpu", "mtriple", "arch")) + "}"
        peaks = "/".join(f"{p.peak_ops_per_s[d] / 1e9:.0f}" for d in ("fp32", "fp16", "int8"))
        table.add_row(p.name, p.compute_unit, f"{p.cores} @ {p.clock_hz / 1e9:.2f}", str(target),
                      p.cross_toolchain or "native", peaks,
                      f"{p.memory_bandwidth_bytes_per_s / 1e9:.1f}", format_size(p.ram_bytes),
                      f"{p.power_w['idle']}/{p.power_w['typical']}/{p.power_w['max']}")
    console.print(table)
    return 0



def _techniques(args, console: Console) -> int:
    from collections import Counter

    from rich.table import Table

    from .compression.registry import TECHNIQUES, technique_of

    offered, skips = Counter(), []
    if args.model:
        from .api import discover_knobs, discover_skips, load_user_workload

        workload = load_user_workload(args.model, **_onnx_inputs(args))
        offered = Counter(technique_of(k.technique) for k in discover_knobs(workload))
        skips = discover_skips(workload)
    table = Table(title="compression techniques" + (f" ({args.model})" if args.model else ""))
    for column in ("technique", "applies to", "knobs", "implemented in") + \
            (("knobs here", "skipped") if args.model else ()):
        table.add_column(column, overflow="fold")
    skipped = Counter(technique_of(s.technique) for s in skips)
    for t in TECHNIQUES:
        row = [t.name, t.applies_to, t.choices, t.module]
        if args.model:
            row += [str(offered.get(t.name, 0)), str(skipped.get(t.name, 0))]
        table.add_row(*row)
    console.print(table)
    if args.model:
        _model_notes(workload, console)
    for skip in skips:
        console.print(f"  skipped: {skip.message()}", markup=False, highlight=False)
    return 0


def _model_notes(workload, console: Console) -> None:
    """How a user's ONNX file was read: preparation, inputs, metric, which techniques path."""
    lines = [f"model: {workload.description}"]
    lines += [f"prepared: {note}" for note in workload.preparation]
    if workload.data_source:
        lines.append(f"inputs: {workload.data_source}")
    if workload.techniques_path:
        lines.append(f"techniques path: {workload.techniques_path}")
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _add_device_commands(commands) -> None:
    """profile / rpc-server: measuring real devices."""
    profile = commands.add_parser("profile", help="measure a device with micro-benchmarks and "
                                  "write a calibrated profile")
    where = profile.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="measure this machine (ONNX Runtime)")
    where.add_argument("--rpc-tracker", metavar="HOST:PORT", help="measure a board over TVM RPC")
    profile.add_argument("--rpc-key", help="device key of the board at the tracker")
    profile.add_argument("--base", help="profile to start from (default: host with --local; "
                         "required with --rpc-tracker, e.g. raspberry-pi-4)")
    profile.add_argument("--name", help="name of the written profile (default: the base's)")
    profile.add_argument("--out", required=True, help="profile JSON file to write")

    server = commands.add_parser("rpc-server", help="run TVM's RPC server with autocompress's "
                                 "power and memory readings (start this on the board)")
    server.add_argument("--tracker", metavar="HOST:PORT", help="register with this tracker")
    server.add_argument("--key", required=True, help="device key to register under (e.g. pi4)")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes remote "
                        "code execution to the network: only on a trusted network)")
    server.add_argument("--port", type=int, default=9090)


def _profile(args, console: Console) -> int:
    from .device_profiles import resolve_target
    from .backends.device_probe import calibrated, measure, ort_timer, rpc_timer, write_profile

    if args.local:
        base = resolve_target(args.base or "host")
        timer, runtime = ort_timer(), "ONNX Runtime on this machine"
    else:
        from .backends.tvm_rpc import RpcDevice, RpcError

        if not args.base:
            raise RpcError("--base PROFILE is required with --rpc-tracker (e.g. raspberry-pi-4)")
        base = resolve_target(args.base)
        device = RpcDevice.parse(args.rpc_tracker, args.rpc_key or "", repeat=10)
        device.check()
        timer, runtime = rpc_timer(device, base), f"TVM over RPC ({device.name})"
    results = measure(timer, log=lambda line: console.print(f"  {line}"))
    path = write_profile(calibrated(base, results, runtime, args.name), args.out)
    console.print(f"profile written: {path}")
    return 0


def _rpc_server(args, console: Console) -> int:
    from .backends.tvm_rpc import start_server

    server = start_server(args.tracker, args.key, host=args.host, port=args.port)
    console.print(f"RPC server on {args.host}:{server.port} under key {args.key!r}"
                  + (f", registered with {args.tracker}" if args.tracker else "") + "; Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    finally:
        server.terminate()


def _add_worker_command(commands) -> None:
    worker = commands.add_parser("worker", help="join a running search from this machine: run "
                                 "trials of its study until none is left")
    worker.add_argument("--storage", default=os.environ.get("AUTOCOMPRESS_STORAGE"),
                        help="the search's storage URL, e.g. postgresql://user@host/db "
                        "(default: $AUTOCOMPRESS_STORAGE; a password is better kept in ~/.pgpass)")
    worker.add_argument("--study", default="autocompress", help="study name (default autocompress)")
    worker.add_argument("--threads", type=int, help="ONNX Runtime / torch threads (default: "
                        "as a single search process)")
    worker.add_argument("--seed", type=int, help="sampler seed (default: the study's)")
    _debug_flag(worker, argparse.SUPPRESS)


def _worker(args, console: Console) -> int:
    from .api import RunError, join
    from .search.storage import redact

    if not args.storage:
        raise RunError("worker needs --storage URL (or $AUTOCOMPRESS_STORAGE)")
    if args.threads is not None and args.threads < 1:
        raise RunError("--threads must be at least 1")

    def done(study, trial) -> None:
        reason = trial.user_attrs.get("fail_reason", "")
        console.print(f"trial {trial.number}: {trial.state.name.lower()} {reason}".rstrip(),
                      markup=False, highlight=False, soft_wrap=True)

    console.print(f"worker pid {os.getpid()} joining study {args.study!r} at "
                  f"{redact(args.storage)}", markup=False, highlight=False, soft_wrap=True)
    ran = join(args.storage, args.study, args.threads, args.seed, [done])
    console.print(f"no queued trial left; this worker ran {ran}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
