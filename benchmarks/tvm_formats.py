"""Format x target table: does TVM 0.27 compile every artifact format the search emits for
every target, and does the host library match ONNX Runtime on evaluation batches?

    .venv/bin/python benchmarks/tvm_formats.py [--skip-minilm]

Small models (the test suite's: tiny MLP, conv net, early-exit CNN and transformer) for
every format, plus digits-cnn and MiniLM in their main formats. Each cell compiles from a
fresh cache (untuned). Writes results/tvm_formats.json and docs/tvm_formats.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGETS = ("host", "raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-orin-nano")
MAIN_FORMATS = ("float", "w8", "w4", "w8a8c", "static-qdq")


def _uniform(**settings):
    def plan(workload):
        from autocompress.api import discover_knobs
        from autocompress.compression.weight_knobs import uniform_plan

        return uniform_plan(discover_knobs(workload), **settings)
    return plan


def _exit(workload):
    """An exit halfway down the model's block container (the search's own knob)."""
    from autocompress.api import discover_knobs
    from autocompress.compression.plan import Plan

    knob = next(k for k in discover_knobs(workload) if k.name == "exit_after")
    return Plan({knob.unit: {"exit_after": knob.choices[(len(knob.choices) + 1) // 2]}})


FORMAT_PLANS = {
    **{q: _uniform(quant=q) for q in ("float", "w16", "w8", "w4", "w3", "w2", "w8a8", "w8a8c")},
    "palette": _uniform(clusters=16), "sparse": _uniform(sparsity=0.75),
    "sparse-w4": _uniform(sparsity=0.75, quant="w4"),
    "static-qdq": _uniform(quant="w8", calibration="minmax"),
}


def small_format_cases() -> list[tuple]:
    """(format, model name, workload factory, plan factory): one small model per format."""
    from tests.conv_workload import make_workload as conv
    from tests.test_early_exit import _cnn_workload, _transformer_workload
    from tests.tiny_workload import make_workload as mlp

    cases = [(name, "tiny MLP", mlp, plan) for name, plan in FORMAT_PLANS.items()]
    cases += [("conv-w4", "conv net", conv, _uniform(quant="w4")),
              ("conv-w8a8 (ConvInteger)", "conv net", conv, _uniform(quant="w8a8")),
              ("conv-static-qdq", "conv net", conv, _uniform(quant="w8", calibration="minmax")),
              ("early exit (If)", "tiny CNN", _cnn_workload, _exit),
              ("early exit (If)", "tiny transformer", lambda: _transformer_workload(True),
               _exit)]
    return cases


def big_cases(skip_minilm: bool) -> list[tuple]:
    from autocompress.workloads import load_workload

    names = ["digits-cnn"] + ([] if skip_minilm else ["minilm"])
    cases = []
    for model in names:
        cases += [(f, model, lambda m=model: load_workload(m), FORMAT_PLANS[f]) for f in MAIN_FORMATS]
        cases.append(("early exit (If)", model, lambda m=model: load_workload(m), _exit))
    return cases


def run_case(fmt, model, workload, plan_factory, folder: Path, max_batches: int) -> dict:
    from autocompress.backends import tvm_check, tvm_compile
    from autocompress.compression.apply import apply_plan
    from autocompress.device_profiles import resolve_target

    path = apply_plan(plan_factory(workload), workload, folder / f"{len(list(folder.iterdir()))}.onnx").path
    shapes = {k: tuple(v.shape) for k, v in workload.example.items()}
    row = {"format": fmt, "model": model, "targets": {}}
    for target in TARGETS:
        start = time.perf_counter()
        try:
            library = tvm_compile.compile_onnx(path, shapes, resolve_target(target), use_tuning=False)
            row["targets"][target] = {"compiles": True, "seconds": time.perf_counter() - start,
                                      "machine": tvm_compile.elf_machine(library.path)}
        except tvm_compile.TvmError as err:
            row["targets"][target] = {"compiles": False, "error": str(err)}
            continue
        if target == "host":
            agreement = tvm_check.compare(library.path, path, workload.evaluation[:max_batches],
                                          workload.input_names, shapes)
            row["host_check"] = {"ok": agreement.ok, "exact": agreement.exact,
                                 "optimized": agreement.optimized, "inputs": agreement.inputs}
    return row


def render(rows: list[dict]) -> str:
    from autocompress.backends.tvm_check import EXACT_TOLERANCE, KERNEL_TOLERANCE

    lines = ["# TVM 0.27: artifact formats x targets", "",
             "Produced by `benchmarks/tvm_formats.py` (raw numbers: `results/tvm_formats.json`). "
             "A cell is the compile time of an untuned library (import + `tvm.compile` + "
             "export, cross-linked with `aarch64-linux-gnu-gcc` for the boards); *host vs ORT* is "
             f"the largest output difference to the ONNX Runtime arithmetic TVM follows, as a share "
             f"of the output range (limit {EXACT_TOLERANCE:.0e}; the other ORT arithmetic within "
             f"{KERNEL_TOLERANCE:.0%}, see `backends/tvm_check.py`), over the evaluation inputs "
             "(MiniLM: the first batch; shorter sequences zero-padded to the 64-token library).", "",
             "| format | model | " + " | ".join(TARGETS) + " | host vs ORT |",
             "|---|---|" + "---|" * len(TARGETS) + "---|"]
    for r in rows:
        cells = []
        for t in TARGETS:
            cell = r["targets"][t]
            cells.append(f"{cell['seconds']:.1f} s" if cell["compiles"] else f"no: {cell['error']}")
        check = r.get("host_check")
        verdict = (f"{'ok' if check['ok'] else 'FAILS'} {min(check['exact'], check['optimized']):.0e} "
                   f"({check['inputs']} inputs)") if check else "-"
        lines.append(f"| {r['format']} | {r['model']} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--max-batches", type=int, default=1, help="evaluation batches checked")
    args = parser.parse_args()
    os.environ["AUTOCOMPRESS_CACHE"] = tempfile.mkdtemp(prefix="autocompress-tvm-formats-")
    folder = Path(tempfile.mkdtemp(prefix="tvm-formats-"))
    rows, workloads = [], {}
    for fmt, model, make, plan in small_format_cases() + big_cases(args.skip_minilm):
        workload = workloads.setdefault(model, make())
        rows.append(run_case(fmt, model, workload, plan, folder, args.max_batches))
        r = rows[-1]
        print(f"{fmt:24s} {model:16s} " + " ".join(
            "ok" if r["targets"][t]["compiles"] else "NO" for t in TARGETS)
            + f" host {r.get('host_check')}", flush=True)
    (ROOT / "results" / "tvm_formats.json").write_text(json.dumps(rows, indent=2) + "\n")
    (ROOT / "docs" / "tvm_formats.md").write_text(render(rows))
    print("wrote results/tvm_formats.json, docs/tvm_formats.md")


if __name__ == "__main__":
    main()
