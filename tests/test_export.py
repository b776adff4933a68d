"""`autocompress export`: the artifact of one trial, checked against the search's record."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autocompress import api
from autocompress.cli import main
from autocompress.export import export
from autocompress.search.objectives import Budget

TINY = "tests.tiny_workload:make_workload"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    api.search(api.SearchConfig(model=TINY, target="raspberry-pi-4", trials=5, seed=0,
                                budget=Budget(max_size_bytes=40_000), out=str(out),
                                finalize_s=0.0))
    return out


def document(run):
    return json.loads((run / "pareto.json").read_text())


def one_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("autocompress: error: "), err
    return err[0]


def test_onnx_export_of_a_front_point_is_checked_and_runs(run, tmp_path):
    point = document(run)["front"][0]
    result = export(run, point["id"], "onnx", out=tmp_path / "out")
    model = tmp_path / "out" / "model.onnx"
    assert hashlib.sha256(model.read_bytes()).hexdigest() == point["artifact_sha256"]
    assert model.stat().st_size == point["size_bytes"]
    assert result.quality == pytest.approx(point["quality"], abs=1e-9)
    manifest = json.loads((tmp_path / "out" / "export.json").read_text())
    assert manifest["plan"] == point["plan"] and manifest["target"] == "raspberry-pi-4"
    assert manifest["quality"]["re_measured"] == result.quality
    ran = subprocess.run([sys.executable, "run_model.py"], cwd=tmp_path / "out",
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "outputs match the export's record" in ran.stdout


def test_any_complete_trial_is_rebuilt_to_the_recorded_bytes(run, tmp_path):
    import optuna

    doc = document(run)
    front = {p["id"] for p in doc["front"]}
    study = optuna.load_study(study_name="autocompress", storage=doc["study"]["storage"])
    other = next(t for t in study.get_trials() if t.state.name == "COMPLETE"
                 and t.number not in front)
    result = export(run, other.number, "onnx", out=tmp_path / "other")
    digest = hashlib.sha256(result.files["onnx"].read_bytes()).hexdigest()
    assert digest == other.user_attrs["metrics"]["artifact_sha256"]
    assert result.quality == pytest.approx(other.user_attrs["metrics"]["quality"], abs=1e-9)


def test_a_quality_that_disagrees_with_the_record_is_refused(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    doc = document(copy)
    doc["front"][0]["quality"] -= 0.01
    (copy / "pareto.json").write_text(json.dumps(doc))
    code = main(["export", str(copy), "--pick", str(doc["front"][0]["id"]), "--out",
                 str(tmp_path / "out")])
    line = one_error(capsys)
    assert code == 2 and "but the search recorded" in line and "not exporting" in line


def test_an_artifact_that_changed_is_refused(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    point = document(copy)["front"][0]
    artifact = copy / point["artifact"]
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    code = main(["export", str(copy), "--pick", str(point["id"]), "--out", str(tmp_path / "o")])
    line = one_error(capsys)
    assert code == 2 and "sha256" in line and "differs from the search's record" in line


def test_unknown_pick_names_the_front(run, capsys, tmp_path):
    code = main(["export", str(run), "--pick", "999", "--out", str(tmp_path / "o")])
    line = one_error(capsys)
    assert code == 2 and "no complete trial 999" in line and "front points:" in line


def test_tvm_export_for_the_host_runs_and_matches_onnx_runtime(run, tmp_path):
    point = document(run)["front"][0]
    result = export(run, point["id"], "tvm", target="host", out=tmp_path / "tvm")
    from autocompress.backends.tvm_compile import elf_machine

    assert elf_machine(result.files["tvm"]) == "x86-64"
    manifest = json.loads((tmp_path / "tvm" / "export.json").read_text())
    assert manifest["tvm"]["check"].startswith("run here on the evaluation batches")
    ran = subprocess.run([sys.executable, "run_model_tvm.py"], cwd=tmp_path / "tvm",
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "outputs match the export's record" in ran.stdout


def test_tvm_export_cross_compiles_for_the_pi(run, tmp_path):
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.fail("aarch64-linux-gnu-gcc missing: run scripts/system-packages.sh")
    point = document(run)["front"][0]
    result = export(run, point["id"], "tvm", out=tmp_path / "pi")   # the run's target
    from autocompress.backends.tvm_compile import elf_machine

    assert result.target == "raspberry-pi-4"
    assert elf_machine(result.files["tvm"]) == "aarch64"
    manifest = json.loads((tmp_path / "pi" / "export.json").read_text())
    assert manifest["tvm"]["check"].startswith("cross-compiled (aarch64)")


def _sample_plans(workload, rng, per_technique: int = 2) -> list[dict]:
    """Random plans of every technique the workload offers (one of its knobs always set,
    the others with probability 1/2), each with random storage for a few weights."""
    from autocompress.api import discover_knobs
    from autocompress.compression.plan import Plan

    knobs = discover_knobs(workload)
    weight = [k for k in knobs if k.name in ("quant", "sparsity", "clusters")]
    plans = []
    for technique in sorted({k.technique for k in knobs}):
        own = [k for k in knobs if k.technique == technique]
        for _ in range(per_technique):
            first = next((k for k in own if k.name == "exit_after"),   # the threshold needs it
                         own[int(rng.integers(len(own)))])
            chosen = [k for k in own if k is first or rng.random() < 0.5]
            chosen += [k for k in weight if k not in chosen and rng.random() < 0.1]
            units: dict = {}
            for knob in chosen:
                value = knob.choices[int(rng.integers(1, len(knob.choices)))]
                units.setdefault(knob.unit, {})[knob.name] = value
            plans.append(Plan(units).to_dict())
    return plans


@pytest.mark.parametrize("spec", ["tests.tiny_transformer:make_tiny_transformer",
                                  "tests.conv_workload:make_workload"])
def test_plans_of_every_technique_rebuild_to_the_same_bytes_in_fresh_processes(spec, tmp_path):
    """Same plan -> same bytes, across processes and torch thread counts (1 in a search
    worker, 2 in the search): what `export` relies on to rebuild a trial."""
    import numpy as np

    from autocompress.workloads import load_workload

    plans = _sample_plans(load_workload(spec), np.random.default_rng(14))
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    digests = []
    for threads in (1, 2):
        ran = subprocess.run([sys.executable, "-m", "tests.rebuild_plans", spec, str(threads),
                              str(tmp_path / "plans.json")], capture_output=True, text=True,
                             timeout=600, env={**os.environ, "AUTOCOMPRESS_CACHE": str(tmp_path / f"c{threads}")})
        assert ran.returncode == 0, ran.stderr[-2000:]
        digests.append(json.loads(ran.stdout.strip().splitlines()[-1]))
    built = [d for d in digests[0] if not d.startswith("PlanError")]
    assert len(built) >= len(plans) // 2, digests[0]
    different = [(i, plans[i]) for i, (a, b) in enumerate(zip(*digests)) if a != b]
    assert not different, different


def test_a_failed_tvm_export_removes_what_it_wrote(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))   # no cached library
    source = json.loads((Path(__file__).parents[1] / "autocompress" / "device_profiles"
                         / "raspberry-pi-4.json").read_text())
    source.update(name="pi-without-toolchain", cross_toolchain="no-such-aarch64-gcc")
    (tmp_path / "pi.json").write_text(json.dumps(source))
    point = document(run)["front"][0]
    fresh, kept = tmp_path / "fresh", tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("the user's own file")
    for out in (fresh, kept):
        code = main(["export", str(run), "--pick", str(point["id"]), "--format", "tvm",
                     "--target", str(tmp_path / "pi.json"), "--out", str(out)])
        line = one_error(capsys)
        assert code == 2 and "no-such-aarch64-gcc" in line and "not found" in line
    assert not fresh.exists()
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


def test_an_early_exit_trial_re_measures_to_its_recorded_quality(tmp_path):
    """Plan 18 of the issue: the search scores an early-exit artifact input by input (its
    exit decision is per input); the export re-measured whole batches and refused."""
    from autocompress.backends import ort_runner
    from autocompress.compression.plan import Plan
    from autocompress.device_profiles import resolve_target
    from autocompress.export import check_quality
    from autocompress.pipeline import Evaluator
    from tests.tiny_transformer import make_tiny_transformer

    workload = make_tiny_transformer()
    evaluator = Evaluator(workload, resolve_target("host"), artifact_root=tmp_path)
    plan = Plan({"layers": {"exit_after": "layers.1", "exit_threshold": 0.999}})  # exits 22%
    metrics = evaluator.evaluate(plan)
    record = {"id": 18, "quality": metrics.quality}
    path = evaluator.artifact_path(plan)
    batchwise = workload.score(ort_runner.run_batches(ort_runner.make_session(path),
                                                      workload.evaluation)).value
    assert metrics.early_exit and 0 < metrics.early_exit["exit_rate"] < 1
    assert abs(batchwise - metrics.quality) > 1e-6      # the old re-measurement disagreed
    assert check_quality(path, workload, record) == pytest.approx(metrics.quality, abs=1e-9)


def _board_export(tmp_path, **settings) -> Path:
    """A TVM export folder for the host, as `export` writes it, of the tiny MLP under a
    uniform plan (the board check is the runner's, whatever the target)."""
    from autocompress.api import discover_knobs
    from autocompress.compression.apply import apply_plan
    from autocompress.compression.weights.knobs import uniform_plan
    from autocompress.device_profiles import resolve_target
    from autocompress.export import compile_tvm, write_runner
    from tests.tiny_workload import make_workload

    workload = make_workload()
    folder = tmp_path / "board"
    folder.mkdir()
    model = apply_plan(uniform_plan(discover_knobs(workload), **settings), workload,
                       folder / "model.onnx").path
    write_runner(folder, model, workload)
    _, record = compile_tvm(model, resolve_target("host"), workload, folder)
    (folder / "export.json").write_text(json.dumps({"tvm": record}))
    return folder


def _run_board_check(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_model_tvm.py"], cwd=folder, capture_output=True,
                          text=True, timeout=300)


def _scale_expected(folder: Path, factor: float, first_only: bool = False) -> None:
    import numpy as np

    path = folder / "tvm_expected_outputs.npz"
    with np.load(path) as data:
        arrays = {k: v * factor if not first_only or k.startswith("0_") else v
                  for k, v in data.items()}
    np.savez(path, **arrays)


def test_the_board_check_of_a_requantized_graph_uses_the_median_input_and_the_cosine(tmp_path):
    folder = _board_export(tmp_path, quant="w8", calibration="minmax")   # static QDQ
    record = json.loads((folder / "export.json").read_text())["tvm"]
    assert record["requantized"] > 0 and record["check_inputs"] == 8
    ran = _run_board_check(folder)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "outputs match the export's record: 8 check inputs" in ran.stdout
    assert "requantized graph" in ran.stdout
    _scale_expected(folder, 1.02, first_only=True)     # one input off: the median holds
    assert _run_board_check(folder).returncode == 0
    _scale_expected(folder, 1.02)                      # every input off by 2% of its range
    ran = _run_board_check(folder)
    assert ran.returncode == 1 and "outputs differ from the export's record" in ran.stderr


def test_the_board_check_of_a_float_graph_holds_every_input(tmp_path):
    folder = _board_export(tmp_path, quant="w4")
    assert json.loads((folder / "export.json").read_text())["tvm"]["requantized"] == 0
    ran = _run_board_check(folder)
    assert ran.returncode == 0 and "(limit 1e-03)" in ran.stdout, ran.stderr[-2000:]
    _scale_expected(folder, 1.002, first_only=True)    # one input off by 0.2% of its range
    ran = _run_board_check(folder)
    assert ran.returncode == 1 and "worst 2.0e-03" in ran.stderr
