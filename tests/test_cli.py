"""User-facing errors: one clear line on stderr, exit code 2, nothing half-written."""
import json

import pytest

from autocompress.cli import main

TINY = "tests.tiny_workload:make_workload"


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("autocompress: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_unknown_target_lists_the_known_ones(capsys, tmp_path):
    code, _, err = run(capsys, "search", "--model", TINY, "--target", "toaster", "--out", str(tmp_path / "r"))
    line = one_error_line(err)
    assert code == 2 and "toaster" in line and "jetson-nano" in line and "raspberry-pi-4" in line
    assert not (tmp_path / "r").exists()


def test_unparseable_budget_says_which_base(capsys, tmp_path):
    code, _, err = run(capsys, "search", "--model", TINY, "--budget", "4 bananas", "--out", str(tmp_path / "r"))
    line = one_error_line(err)
    assert code == 2 and "10^6" in line and "2^20" in line
    assert not (tmp_path / "r").exists()


def test_missing_model_file(capsys, tmp_path):
    code, _, err = run(capsys, "search", "--model", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "r"))
    assert code == 2 and "not found" in one_error_line(err)
    assert not (tmp_path / "r").exists()


def test_corrupt_model_file(capsys, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf model" * 10)
    code, _, err = run(capsys, "search", "--model", str(bad), "--out", str(tmp_path / "r"))
    assert code == 2 and "cannot load ONNX model" in one_error_line(err)
    assert not (tmp_path / "r").exists()


def test_infeasible_budget_names_the_closest_trial_and_the_blocker(capsys, tmp_path):
    out = tmp_path / "r"
    code, _, err = run(capsys, "search", "--model", TINY, "--budget", "1KB", "--trials", "3",
                       "--out", str(out))
    line = one_error_line(err)
    assert code == 2
    assert "closest was trial" in line and "size <= 1.0 kB" in line
    document = json.loads((out / "pareto.json").read_text())
    assert document["front"] == [] and document["infeasible_reason"] in line
    assert not list(out.glob("*.tmp*"))


def test_targets_lists_every_profile(capsys):
    code, out, _ = run(capsys, "targets")
    assert code == 0
    for name in ("host", "jetson-nano", "jetson-orin-nano", "raspberry-pi-4", "raspberry-pi-5"):
        assert name in out


def test_unknown_second_target_is_one_line_exit_2(tmp_path, capsys):
    from autocompress.cli import main

    code = main(["search", "--model", "tests.tiny_workload:make_workload", "--target", "host,mars-rover", "--trials", "2",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "mars-rover" in err[0]
    assert not (tmp_path / "run").exists()


def test_the_sensitivity_analysis_shows_its_own_bar_then_gives_way(capsys, tmp_path, monkeypatch):
    """Minutes on a large model: the analysis counts its knobs on a bar of its own, stopped
    at the last knob so that the trials' bar (rich allows one live display) can start."""
    from io import StringIO

    from rich.console import Console

    from autocompress.cli import SearchProgress

    out = StringIO()
    progress = SearchProgress(Console(file=out, width=120))
    for done in range(1, 4):
        progress.sensitivity(done, 3)
    assert progress.sensitivity_bar is None
    progress.start(2, 0)
    progress.stop()
    assert "sensitivity" in out.getvalue() and "3/3 knobs" in out.getvalue()

    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))   # not yet analysed
    code, printed, _ = run(capsys, "search", "--model", TINY, "--trials", "1", "--out",
                           str(tmp_path / "r"))
    assert code == 0 and "knobs" in printed and "timing each weight format" in printed
