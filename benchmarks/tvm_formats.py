"""Format x target table: does TVM 0.27 compile every artifact format the search emits for
every target, and does the host library match ONNX Runtime on evaluation batches?

    .venv/bin/python benchmarks/tvm_formats.py [--targets host,...] [--skip-minilm]

Small models (the test suite's: tiny MLP, conv net, early-exit CNN and transformer) for
every format, plus digits-cnn and MiniLM in their main formats. Each cell compiles from a
fresh TVM cache (untuned). The host library is checked by ``backends/tvm_check.py`` on every
evaluation input (MiniLM: the first ``--minilm-sentences``; untuned TVM takes 1.7 s a
sentence here): the graph's arithmetic (teacher-forced where activations are requantized)
and the workload's quality. ``--targets`` compiles for a subset; the other targets' cells
are carried over from the previous results file. Writes results/tvm_formats.json and
docs/tvm_formats.md.
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
MAIN_FORMATS = ("float", "w8", "w4", "w8a8c", "w8a8cf", "static-qdq")


def _uniform(**settings):
    def plan(workload):
        from autocompress.api import discover_knobs
        from autocompress.compression.weights.knobs import uniform_plan

        return uniform_plan(discover_knobs(workload), **settings)
    return plan


def _exit(workload):
    """An exit halfway down the model's block container (the search's own knob)."""
    from autocompress.api import discover_knobs
    from autocompress.compression.plan import Plan

    knob = next(k for k in discover_knobs(workload) if k.name == "exit_after")
    return Plan({knob.unit: {"exit_after": knob.choices[(len(knob.choices) + 1) // 2]}})


FORMAT_PLANS = {
    **{q: _uniform(quant=q) for q in ("float", "w16", "w8", "w4", "w3", "w2", "w8a8", "w8a8c",
                                      "w8a8cf")},
    "palette": _uniform(clusters=16), "sparse": _uniform(sparsity=0.75),
    "sparse-w4": _uniform(sparsity=0.75, quant="w4"),
    "static-qdq": _uniform(quant="w8", calibration="minmax"),
}


def small_format_cases() -> list[tuple]:
    """(format, model name, workload factory, plan factory): one small model per format."""
    from tests.conv_workload import make_workload as conv
    from tests.fixture_models import exit_cnn_workload, exit_transformer_workload
    from tests.tiny_workload import make_workload as mlp

    cases = [(name, "tiny MLP", mlp, plan) for name, plan in FORMAT_PLANS.items()]
    cases += [("conv-w4", "conv net", conv, _uniform(quant="w4")),
              ("conv-w8a8 (ConvInteger)", "conv net", conv, _uniform(quant="w8a8")),
              ("conv-static-qdq", "conv net", conv, _uniform(quant="w8", calibration="minmax")),
              ("early exit (If)", "tiny CNN", exit_cnn_workload, _exit),
              ("early exit (If)", "tiny transformer", lambda: exit_transformer_workload(True),
               _exit)]
    return cases


def big_cases(skip_minilm: bool, minilm_sentences: int) -> list[tuple]:
    from autocompress.workloads import load_workload
    from autocompress.workloads.minilm import make_minilm_workload

    makers = {"digits-cnn": lambda: load_workload("digits-cnn"),
              "minilm": lambda: make_minilm_workload(n_evaluation=minilm_sentences)}
    cases = []
    for model, make in makers.items():
        if model == "minilm" and skip_minilm:
            continue
        cases += [(f, model, make, FORMAT_PLANS[f]) for f in MAIN_FORMATS]
        cases.append(("early exit (If)", model, make, _exit))
    return cases


def run_case(fmt, model, workload, plan_factory, folder: Path, targets, forced_inputs: int) -> dict:
    from autocompress.backends import tvm_compile
    from autocompress.compression.apply import apply_plan
    from autocompress.device_profiles import resolve_target

    path = apply_plan(plan_factory(workload), workload, folder / f"{len(list(folder.iterdir()))}.onnx").path
    shapes = {k: tuple(v.shape) for k, v in workload.example.items()}
    row = {"format": fmt, "model": model, "targets": {}}
    for target in targets:
        start = time.perf_counter()
        try:
            library = tvm_compile.compile_onnx(path, shapes, resolve_target(target), use_tuning=False)
            row["targets"][target] = {"compiles": True, "seconds": time.perf_counter() - start,
                                      "machine": tvm_compile.elf_machine(library.path)}
        except tvm_compile.TvmError as err:
            row["targets"][target] = {"compiles": False, "error": str(err)}
            continue
        if target == "host":
            row["host_check"] = host_check(library.path, path, workload, shapes, forced_inputs)
    return row


def host_check(library, path, workload, shapes, forced_inputs: int) -> dict:
    """Every evaluation input, the workload's scorer for the quality criterion."""
    from dataclasses import asdict

    from autocompress.backends import tvm_check

    start = time.perf_counter()
    agreement = tvm_check.compare(library, path, workload.evaluation, workload.input_names,
                                  shapes, score=workload.score, forced_inputs=forced_inputs)
    return {"ok": agreement.ok, **asdict(agreement), "seconds": time.perf_counter() - start,
            "quality_search": search_quality(path, workload),
            "board": board_check(library, path, workload, shapes)}


def board_check(library, path, workload, shapes) -> dict:
    """The export's run_model_tvm.py check (backends/board_check.py), run here on the host
    library: what a board's must pass."""
    from dataclasses import asdict

    from autocompress.backends import board_check as board
    from autocompress.backends import tvm_check

    reference = tvm_check.board_reference(path, workload.evaluation, workload.input_names, shapes)
    got = tvm_check.library_outputs(library, reference.inputs, workload.input_names)
    return asdict(board.verdict(got, reference.outputs, bool(reference.requantized)))


def search_quality(path, workload) -> float:
    """The quality as the search measures it (``pipeline.Evaluator``): ORT's optimized session
    on the evaluation batches as they are, early-exit artifacts input by input."""
    from autocompress.backends import ort_runner
    from autocompress.cost_models import exit_runtime

    session = ort_runner.make_session(path)
    if exit_runtime.is_early_exit(session):
        outputs, _ = exit_runtime.run_per_input(session, workload.evaluation)
    else:
        outputs = ort_runner.run_batches(session, workload.evaluation)
    return workload.score(outputs).value


HEADER = """\
# TVM 0.27: artifact formats x targets

Produced by `benchmarks/tvm_formats.py` (raw numbers: `results/tvm_formats.json`). A target
cell is the compile time of an untuned library (import + `tvm.compile` + export, cross-linked
with `aarch64-linux-gnu-gcc` for the boards){carried}.

The host library is checked against ONNX Runtime on every evaluation input (MiniLM: the first
{sentences} evaluation sentences, each zero-padded to the 64-token library), by two criteria
(`backends/tvm_check.py`), both required for *ok*:

- **graph arithmetic** (hard limit {exact:.0e} of the output range): TVM computes the graph as
  written, which ORT runs with graph optimizations disabled. Where activations are requantized
  (w8a8, w8a8c, static QDQ) the check is teacher-forced: a second library, cut at each of the
  *cut* quantizers, reads ORT's integer codes there, every float segment must land within the
  limit and every TVM quantizer given ORT's floats must give ORT's codes exactly. *end to end*
  is the deployed library's own worst input and how many inputs pass the limit there: a value
  a few ulps from a rounding boundary takes the neighbouring code when kernels sum in another
  order, and later requantizations amplify that step. Reported, not limited.
- **quality** (limit {quality} in the metric's units): the library's quality equals ORT's
  optimized session's (what the search measures) on the same inputs. *ORT opt.* is that
  session's elementwise distance (weight-only ints run as MatMulNBits with int8 activations;
  static QDQ as integer kernels): reported, not limited. *search* is the quality as the search
  measures it (`pipeline.Evaluator`: the evaluation batches as they are, not padded; early-exit
  artifacts input by input): it differs where the library's shapes change the arithmetic
  (w8a8c's dynamic quantization ranges span a whole batch in the search, one sentence here).

*board check on host* is the check every TVM export carries to the board (`run_model_tvm.py`,
`backends/board_check.py`), run here on the host library: the first {board_inputs} inputs against
ORT's graph arithmetic, every input within {board_tol:.0e} of the output range, or, where
activations are requantized, the median input within that and a mean cosine of at least
{board_cos}.
"""


def render(rows: list[dict], meta: dict) -> str:
    from autocompress.backends.board_check import BOARD_COSINE, BOARD_INPUTS, BOARD_TOLERANCE
    from autocompress.backends.tvm_check import EXACT_TOLERANCE, QUALITY_TOLERANCE

    carried = [t for t in TARGETS if t not in meta["targets"]]
    note = (f"; {', '.join(carried)}: carried over from the previous run" if carried else "")
    if meta.get("carried_models"):
        note += (f"; every {', '.join(meta['carried_models'])} row carried over from the previous "
                 "run (not rerun)")
    lines = [HEADER.format(carried=note, sentences=meta["minilm_sentences"], exact=EXACT_TOLERANCE,
                           quality=QUALITY_TOLERANCE, board_inputs=BOARD_INPUTS,
                           board_tol=BOARD_TOLERANCE, board_cos=BOARD_COSINE),
             "| format | model | " + " | ".join(TARGETS)
             + " | graph arithmetic | end to end | ORT opt. | quality: TVM / ORT / search | host vs ORT "
             "| board check on host |",
             "|---|---|" + "---|" * len(TARGETS) + "---|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for t in TARGETS:
            cell = r["targets"].get(t)
            cells.append("-" if cell is None else f"{cell['seconds']:.1f} s" if cell["compiles"]
                         else f"no: {cell['error']}")
        lines.append(f"| {r['format']} | {r['model']} | " + " | ".join(cells) + " | "
                     + " | ".join(_check_cells(r.get("host_check"))) + " |")
    return "\n".join(lines) + "\n"


def _check_cells(check: dict | None) -> list[str]:
    if check is None:
        return ["-"] * 6
    if check["requantized"]:
        graph = (f"{check['forced']:.0e} ({check['requantized']} cut, {check['forced_inputs']} "
                 f"inputs, {check['mismatched_codes']} codes differ)")
        passing = check["inputs"] - check["diverging"]
        end = f"{check['exact']:.0e} ({passing}/{check['inputs']} within)"
    else:
        graph = f"{check['exact']:.0e} ({check['inputs']} inputs)"
        end = "= graph"
    quality = (f"{check['quality']:.4f} / {check['quality_ort']:.4f} / "
               f"{check['quality_search']:.4f} ({check['metric']})"
               if check.get("quality") is not None and check["metric"] != "none" else "-")
    board = check.get("board")
    board_cell = "-" if board is None else (
        f"{'ok' if board['ok'] else 'FAILS'}: median {board['median']:.0e}, worst "
        f"{board['worst']:.0e}, cosine {board['cosine']:.6f}")
    return [graph, end, f"{check['optimized']:.1%}", quality, "ok" if check["ok"] else "FAILS",
            board_cell]


def _carry_over(rows: list[dict], targets) -> None:
    """Cells of the targets not compiled now, from the previous results file."""
    path = ROOT / "results" / "tvm_formats.json"
    if set(targets) == set(TARGETS) or not path.exists():
        return
    old = json.loads(path.read_text())
    old_rows = old["rows"] if isinstance(old, dict) else old    # before the meta block: a list
    previous = {(r["format"], r["model"]): r for r in old_rows}
    for row in rows:
        before = previous.get((row["format"], row["model"]), {}).get("targets", {})
        for target in TARGETS:
            if target not in row["targets"] and target in before:
                row["targets"][target] = before[target]


def _carry_rows(rows: list[dict], models: list[str]) -> None:
    """Whole rows of models not run now (``--skip-minilm``), from the previous results file,
    so a partial rerun does not drop them from the table."""
    path = ROOT / "results" / "tvm_formats.json"
    if not models or not path.exists():
        return
    old = json.loads(path.read_text())
    rows += [r for r in (old["rows"] if isinstance(old, dict) else old) if r["model"] in models]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help="comma-separated targets to compile (host: also the ORT check)")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--minilm-sentences", type=int, default=64,
                        help="MiniLM evaluation sentences (checks and quality run on all)")
    parser.add_argument("--forced-inputs", type=int, default=32,
                        help="inputs of the teacher-forced check per requantized format")
    args = parser.parse_args()
    targets = [t for t in TARGETS if t in args.targets.split(",")]
    cases = small_format_cases() + big_cases(args.skip_minilm, args.minilm_sentences)
    workloads = {}
    for _, model, make, _ in cases:    # trained weights and MiniLM's caches: the usual cache
        if model not in workloads:
            workloads[model] = make()
    os.environ["AUTOCOMPRESS_CACHE"] = tempfile.mkdtemp(prefix="autocompress-tvm-formats-")
    folder = Path(tempfile.mkdtemp(prefix="tvm-formats-"))
    rows = []
    for fmt, model, _, plan in cases:
        workload = workloads[model]
        rows.append(run_case(fmt, model, workload, plan, folder, targets, args.forced_inputs))
        r = rows[-1]
        print(f"{fmt:24s} {model:16s} " + " ".join(
            "ok" if r["targets"][t]["compiles"] else "NO" for t in targets)
            + f" host {r.get('host_check')}", flush=True)
    _carry_over(rows, targets)
    carried_models = ["minilm"] if args.skip_minilm else []
    _carry_rows(rows, carried_models)
    meta = {"targets": targets, "minilm_sentences": args.minilm_sentences,
            "forced_inputs": args.forced_inputs, "carried_models": carried_models}
    (ROOT / "results" / "tvm_formats.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (ROOT / "docs" / "tvm_formats.md").write_text(render(rows, meta))
    print("wrote results/tvm_formats.json, docs/tvm_formats.md")


if __name__ == "__main__":
    main()
