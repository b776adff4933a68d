"""Bad inputs (issue 16): each is one line on stderr and exit 2, never a traceback unless
``--debug`` asks; failed trials are one line each, their details in the run folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autocompress.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests.tiny_workload:make_workload"


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("autocompress: error: "), err
    return lines[0]


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A run folder as a search leaves it before its first trial (config.json + study)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": TINY, "trials": 2}))
    return run


@pytest.mark.parametrize("content, says", [
    ('{"model": "digits-cnn", "trials": ', "config.json is not valid JSON"),
    ('{"model": "digits-cnn", "colour": "red"}', "config.json: unknown key(s) 'colour'"),
    ('["digits-cnn"]', "config.json: expected a JSON object, got list"),
])
def test_resume_with_a_damaged_config_is_one_line(content, says, capsys, run_folder):
    (run_folder / "config.json").write_text(content)
    assert main(["search", "--resume", str(run_folder)]) == 2
    assert says in error_line(capsys)


def test_bad_out_paths_are_one_line(capsys, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    for out, says in ((a_file, "is a file, not a folder"),
                      (a_file / "run", "Not a directory"),
                      (Path("/proc/autocompress-run"), "cannot create the run folder")):
        assert main(["search", "--model", TINY, "--trials", "1", "--out", str(out)]) == 2
        assert says in error_line(capsys)
    assert a_file.read_text() == "not a folder"


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "broken_models.py").write_text(
        "not_callable = 3\n"
        "def boom():\n    raise ValueError('no training data in /data/x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "broken_models"


def test_a_user_factory_that_fails_is_named_in_one_line(capsys, user_module, tmp_path):
    out = str(tmp_path / "r")
    assert main(["search", "--model", f"{user_module}:not_callable", "--out", out]) == 2
    assert error_line(capsys).endswith(
        f"workload '{user_module}:not_callable' failed to load: TypeError: "
        "'int' object is not callable")
    assert main(["search", "--model", f"{user_module}:boom", "--out", out]) == 2
    assert error_line(capsys).endswith(
        f"workload '{user_module}:boom' failed to load: ValueError: no training data in /data/x")
    assert not Path(out).exists()

    assert main(["search", "--model", f"{user_module}:boom", "--out", out, "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "raise ValueError('no training data" in err
    assert err.strip().splitlines()[-1].startswith("autocompress: error: workload ")


@pytest.mark.parametrize("flag", ["--budget", "--max-latency", "--max-energy", "--timeout"])
def test_an_empty_constraint_is_refused_not_ignored(flag, capsys, tmp_path):
    assert main(["search", "--model", TINY, flag, "", "--out", str(tmp_path / "r")]) == 2
    assert "cannot parse" in error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_failed_trials_are_one_line_each_with_details_in_the_run_folder(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "autocompress.cli", "search", "--model", TINY, "--target",
         "raspberry-pi-4", "--trials", "2", "--trial-timeout", "1ms", "--out", str(run)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), AUTOCOMPRESS_THREADS="1"),
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "no trial completed" in errors[0], done.stderr
    failed = [line for line in done.stdout.splitlines() if " failed: " in line]
    assert [line.split()[1] for line in failed] == ["0", "1"], done.stdout
    assert all("TrialTimeout" in line for line in failed)
    assert "Traceback" not in done.stdout + done.stderr

    document = json.loads((run / "pareto.json").read_text())
    failures = document["study"]["failures"]
    assert [f["id"] for f in failures] == [0, 1]
    assert all("Traceback" in f["traceback"] for f in failures)
    log = (run / "search.log").read_text(encoding="utf-8")
    assert log.count(" failed: TrialTimeout") == 2 and log.count("Traceback") == 2
    assert '"units"' in log, "the failed plan is in the log"
