"""`autocompress export`: the artifact of one trial, checked against the search's record."""
import hashlib
import json
import shutil
import subprocess
import sys

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
                                budget=Budget(max_size_bytes=40_000), out=str(out)))
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
    assert manifest["tvm"]["check"].startswith("run here: outputs within")
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
