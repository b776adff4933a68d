"""``autocompress export RUN --pick ID``: the deployable artifact of one trial, checked.

Any complete trial can be exported: a front point's artifact is copied from the run
folder, any other trial's (e.g. a ``plan`` pick) is rebuilt from its plan, which gives the
same bytes. Before saying done, the export is checked against the search's record: the
artifact's sha256, and the quality re-measured with ONNX Runtime on the workload's
held-out batches. A disagreement is an :class:`ExportError` (exit 2), never a warning.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .files import write_json_atomic

FORMATS = ("onnx", "tvm")
QUALITY_TOLERANCE = 1e-6


class ExportError(ValueError):
    """The pick cannot be exported, or the export disagrees with the search's record."""


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    quality: float = math.nan
    recorded_quality: float = math.nan
    target: str = ""


def export(run_dir: Path | str, pick: int, fmt: str = "onnx", target: str | None = None,
           out: Path | str | None = None) -> ExportResult:
    run_dir = Path(run_dir)
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    document = _document(run_dir)
    record = find_record(run_dir, document, pick)
    profile = _profile(document, target)
    out_dir = Path(out) if out else run_dir / "export" / f"{pick}-{fmt}-{profile.name}"
    with _cleanup_on_failure(out_dir):
        return _export(run_dir, document, record, profile, fmt, out_dir)


@contextlib.contextmanager
def _cleanup_on_failure(out_dir: Path):
    """A failed export removes every file it wrote (and the folder if it made it), so a
    half-written folder never looks like a finished export."""
    created = not out_dir.exists()
    before = set(out_dir.iterdir()) if not created else set()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for path in set(out_dir.iterdir()) - before:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise


def _export(run_dir: Path, document: dict, record: dict, profile, fmt: str,
            out_dir: Path) -> ExportResult:
    from .workloads import load_workload

    config = document["config"]
    workload = load_workload(config["model"], config.get("data"), config.get("input_shapes", ()),
                             config.get("metric"))
    model = out_dir / "model.onnx"
    _materialise(run_dir, record, workload, model)
    result = ExportResult(out_dir, {"onnx": model}, recorded_quality=record["quality"],
                          target=profile.name)
    result.quality = check_quality(model, workload, record)
    result.files.update(write_runner(out_dir, model, workload))
    tvm_record = None
    if fmt == "tvm":
        result.files["tvm"], tvm_record = compile_tvm(model, profile, workload, out_dir)
        result.files["tvm_runner"] = out_dir / "run_model_tvm.py"
        result.files["tvm_check_inputs"] = out_dir / "tvm_check_inputs.npz"
        result.files["tvm_expected_outputs"] = out_dir / "tvm_expected_outputs.npz"
    write_json_atomic(out_dir / "export.json", {
        "run": str(run_dir), "pick": record["id"], "format": fmt, "target": profile.name,
        "plan": record["plan"], "plan_digest": record["plan_digest"],
        "artifact_sha256": record["artifact_sha256"],
        "quality": {"recorded": record["quality"], "re_measured": result.quality,
                    "metric": record.get("quality_metric")},
        "tvm": tvm_record,
        "files": {k: v.name for k, v in result.files.items()}})
    result.files["manifest"] = out_dir / "export.json"
    return result


def _document(run_dir: Path) -> dict:
    path = run_dir / "pareto.json"
    if not path.is_file():
        raise ExportError(f"{run_dir}: no pareto.json (not a finished run folder)")
    return json.loads(path.read_text())


def find_record(run_dir: Path, document: dict, pick: int) -> dict:
    """What the search recorded for trial ``pick``: a front point, a plan pick, or any
    complete trial of the study."""
    for p in document["front"]:
        if p["id"] == pick:
            return p
    plan_file = run_dir / "plan.json"
    if plan_file.is_file():
        for row in json.loads(plan_file.read_text())["targets"]:
            if row.get("best") and row["best"]["id"] == pick:
                return {**row["best"], "artifact": None}
    from .report.run import open_run_study
    from .trial_record import metrics_of

    study, _ = open_run_study(run_dir, document)
    if study is not None:
        for t in study.get_trials(deepcopy=False):
            m = metrics_of(t)
            if t.number == pick and m is not None and t.state.name == "COMPLETE":
                return {"id": pick, "plan": t.user_attrs["plan"], "plan_digest": m.plan_digest,
                        "artifact_sha256": m.artifact_sha256, "quality": m.quality,
                        "quality_metric": m.quality_metric, "artifact": None,
                        "fidelity": m.fidelity}
    ids = ", ".join(str(p["id"]) for p in document["front"]) or "none"
    raise ExportError(f"no complete trial {pick} in {run_dir} (front points: {ids})")


def _profile(document: dict, target: str | None):
    from .device_profiles import load_profile, resolve_target

    if target:
        return load_profile(target) if target.endswith(".json") else resolve_target(target)
    config = document["config"]
    return load_profile(config["profile"]) if config.get("profile") else resolve_target(
        document["target"]["name"])


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _materialise(run_dir: Path, record: dict, workload, destination: Path) -> None:
    """Copy the run's artifact, or rebuild it from the plan; the bytes must match the record."""
    source = run_dir / record["artifact"] if record.get("artifact") else None
    if source is not None and source.is_file():
        shutil.copyfile(source, destination)
    else:
        from .compression import fidelity
        from .compression.apply import apply_plan
        from .compression.plan import Plan

        # a proxy trial (not promoted) was built with its scaled training budget
        with fidelity.proxy() if record.get("fidelity") == "proxy" else contextlib.nullcontext():
            apply_plan(Plan.from_dict(record["plan"]), workload, destination)
    digest = sha256(destination)
    if digest != record["artifact_sha256"]:
        raise ExportError(f"exported artifact sha256 {digest[:16]}… differs from the search's "
                          f"record {record['artifact_sha256'][:16]}… for trial {record['id']}: "
                          "the model or the tool changed since the search")


def check_quality(model: Path, workload, record: dict) -> float:
    """Re-measure quality on the held-out batches as the search did (an early-exit artifact
    input by input: its exit decision is per input); refuse if it is not the recorded one."""
    from .backends import ort_runner
    from .cost_models import exit_runtime

    session = ort_runner.make_session(model, ort_runner.TimingConfig().threads)
    if exit_runtime.is_early_exit(session):
        outputs, _ = exit_runtime.run_per_input(session, workload.evaluation)
    else:
        outputs = ort_runner.run_batches(session, workload.evaluation)
    quality = workload.score(outputs).value
    if not math.isclose(quality, record["quality"], rel_tol=QUALITY_TOLERANCE,
                        abs_tol=QUALITY_TOLERANCE):
        raise ExportError(f"exported model scores {quality:.6f} but the search recorded "
                          f"{record['quality']:.6f} for trial {record['id']}: not exporting")
    return quality


RUNNER = '''"""Run the exported model with ONNX Runtime; check it against the outputs saved at export.

    pip install onnxruntime numpy && python run_model.py
"""
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

here = Path(__file__).resolve().parent
session = ort.InferenceSession(str(here / "model.onnx"), providers=["CPUExecutionProvider"])
names = json.loads((here / "io_names.json").read_text())
with np.load(here / "example_inputs.npz", allow_pickle=False) as data:
    feed = {name: data[f"input_{i}"] for i, name in enumerate(names["inputs"])}
with np.load(here / "expected_outputs.npz", allow_pickle=False) as data:
    expected = [data[f"output_{i}"] for i in range(len(names["outputs"]))]
outputs = session.run(None, feed)
for name, got, want in zip(names["outputs"], outputs, expected):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)
times = []
for _ in range(30):
    start = time.perf_counter()
    session.run(None, feed)
    times.append(time.perf_counter() - start)
print(f"outputs match the export's record; median latency {statistics.median(times) * 1e3:.3f} ms")
'''


def write_runner(out_dir: Path, model: Path, workload) -> dict[str, Path]:
    """``run_model.py`` plus the example input and the outputs it must reproduce."""
    from .backends import ort_runner

    session = ort_runner.make_session(model)
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    feed = {name: workload.example[name] for name in inputs}
    result = session.run(None, feed)
    files = {"runner": out_dir / "run_model.py", "io_names": out_dir / "io_names.json",
             "example_inputs": out_dir / "example_inputs.npz",
             "expected_outputs": out_dir / "expected_outputs.npz"}
    files["runner"].write_text(RUNNER, encoding="utf-8")
    files["io_names"].write_text(json.dumps({"inputs": inputs, "outputs": outputs}, indent=2))
    np.savez(files["example_inputs"], **{f"input_{i}": feed[n] for i, n in enumerate(inputs)})
    np.savez(files["expected_outputs"], **{f"output_{i}": r for i, r in enumerate(result)})
    return files


def write_board_check(out_dir: Path, model: Path, workload, names: dict, shapes: dict) -> dict:
    """The board's check inputs and ORT's graph arithmetic on them (run_model_tvm.py)."""
    from .backends import tvm_check

    reference = tvm_check.board_reference(model, workload.evaluation, names["inputs"], shapes)
    np.savez(out_dir / "tvm_check_inputs.npz",
             **{f"{k}_{i}": feed[n] for k, feed in enumerate(reference.inputs)
                for i, n in enumerate(names["inputs"])})
    np.savez(out_dir / "tvm_expected_outputs.npz",
             **{f"{k}_{j}": out for k, row in enumerate(reference.outputs)
                for j, out in enumerate(row)})
    return {"check_inputs": len(reference.inputs), "requantized": reference.requantized}


def compile_tvm(model: Path, profile, workload, out_dir: Path) -> tuple[Path, dict]:
    """TVM library for the target (cross-compiled for aarch64 boards), checked where it can
    run: on this machine its outputs must match ONNX Runtime's on the evaluation batches
    (``backends.tvm_check``)."""
    from .backends import tvm_compile

    names = json.loads((out_dir / "io_names.json").read_text())
    shapes = {n: tuple(workload.example[n].shape) for n in names["inputs"]}
    try:
        compiled = tvm_compile.compile_onnx(model, shapes, profile, out_dir / "model.so")
    except tvm_compile.TvmError as err:
        raise ExportError(f"TVM export for {profile.name} failed: {err}") from None
    record = {"library": compiled.path.name, "kind": compiled.target.kind,
              "target": compiled.target.description, "machine": tvm_compile.elf_machine(compiled.path),
              "cross_compiler": compiled.target.cross_compiler, "tuned": compiled.tuned,
              "compile_s": compiled.compile_s, "cached": compiled.cached}
    if compiled.target.runs_here:
        from .backends import tvm_check

        agreement = tvm_check.compare(compiled.path, model, workload.evaluation,
                                      names["inputs"], shapes)
        if not agreement.ok:
            raise ExportError(f"TVM library differs from ONNX Runtime on the evaluation batches "
                              f"({agreement.describe()}): not exporting")
        record["check"] = f"run here on the evaluation batches, {agreement.describe()}"
    else:
        expected = "aarch64" if "aarch64" in record["target"] else None
        if expected and record["machine"] != expected:
            raise ExportError(f"TVM library is {record['machine']}, expected {expected} "
                              f"for {profile.name}")
        record["check"] = (f"cross-compiled ({record['machine']}): not runnable here; "
                           "run_model_tvm.py checks the outputs on the board")
    record.update(write_board_check(out_dir, model, workload, names, shapes))
    from .backends import board_check

    shutil.copyfile(board_check.__file__, out_dir / "run_model_tvm.py")
    return compiled.path, record
