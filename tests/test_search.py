"""Searches end to end: constraints respected, resume keeps every finished trial."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autocompress import api
from autocompress.search.objectives import Budget

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests.tiny_workload:make_workload"


def test_digits_search_front_meets_the_budget(tmp_path):
    budget = 100_000
    config = api.SearchConfig(model="digits-cnn", target="raspberry-pi-4", trials=8, seed=1,
                              budget=Budget(max_size_bytes=budget), out=str(tmp_path / "run"),
                              finalize_s=0.0)   # the finalize stage has its own tests
    result = api.search(config)
    document = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert document == json.loads(json.dumps(result.document))
    assert document["study"]["n_trials"] == 8
    assert document["baseline"]["size_bytes"] > budget, "the budget really constrains"
    assert document["front"], "a feasible point exists"
    for p in document["front"]:
        artifact = tmp_path / "run" / p["artifact"]
        assert p["size_bytes"] <= budget
        assert artifact.stat().st_size == p["size_bytes"]
        assert all(v <= 0 for v in p["constraints"].values())
        assert p["provenance"]["latency_s"]["kind"] == "predicted"
        assert p["provenance"]["latency_s"]["device"] == "raspberry-pi-4"
        assert p["provenance"]["host_latency_s"]["kind"] == "measured"
        assert 0 <= p["quality"] <= 1
        for key in ("id", "plan", "latency_s", "peak_ram_bytes", "energy_j"):
            assert key in p


def test_host_target_reports_measured_latency(tmp_path):
    config = api.SearchConfig(model=TINY, target="host", trials=3, out=str(tmp_path / "run"))
    document = api.search(config).document
    for p in document["front"]:
        assert p["provenance"]["latency_s"]["kind"] == "measured"
        assert p["latency_s"] == p["host_latency_s"]
        assert p["provenance"]["latency_s"]["repeats"] >= 10


def _finished(storage: str, attempts: int = 5) -> list:
    """Finished trials; a study not created yet, or a database the search holds locked for a
    moment, reads as none after a few tries."""
    for _ in range(attempts):
        try:
            study = optuna.load_study(study_name="autocompress", storage=storage)
            return [t for t in study.get_trials()
                    if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
        except Exception:
            time.sleep(0.3)
    return []


def test_two_searches_share_one_storage_under_their_own_study_names(tmp_path):
    from autocompress.planning import complete_trials

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    documents = {}
    for name, trials in (("first", 3), ("second", 4)):
        config = api.SearchConfig(model=TINY, target="host", trials=trials, study=name,
                                  storage=storage, out=str(tmp_path / name))
        documents[name] = api.search(config).document
    summaries = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}
    assert summaries == {"first": 3, "second": 4}
    for name, trials in (("first", 3), ("second", 4)):
        assert documents[name]["study"]["name"] == name
        assert len(complete_trials(documents[name])) == trials


def test_killed_search_resumes_without_losing_or_repeating_trials(tmp_path):
    run_dir = tmp_path / "run"
    storage = f"sqlite:///{run_dir / 'study.db'}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "autocompress.cli", "search", "--model", TINY, "--target",
           "host", "--trials", "12", "--out", str(run_dir)]
    log = tmp_path / "search.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=out)

    def finished() -> list:   # config.json is written once the search has made its study:
        # opening the database before that would race the search's own creation of it
        return _finished(storage) if (run_dir / "config.json").exists() else []

    deadline = time.time() + 240
    while len(finished()) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    ended = proc.poll()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: (t.values, t.params) for t in _finished(storage)}
    state = "still running" if ended is None else f"ended with {ended}"
    assert 4 <= len(before) < 12, f"killed mid-way ({state}): {log.read_text()[-2000:]}"
    assert not (run_dir / "pareto.json").exists(), "a killed run does not look finished"

    result = api.resume(run_dir)
    study = optuna.load_study(study_name="autocompress", storage=storage)
    after = {t.number: (t.values, t.params) for t in study.get_trials()
             if t.state in (TrialState.COMPLETE, TrialState.FAIL)}
    for number, record in before.items():
        assert after[number] == record, "finished trials are kept as they were"
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(complete) >= 12 - 1     # at most the one interrupted mid-trial is marked failed
    interrupted = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert all("interrupted" in t.user_attrs["fail_reason"] for t in interrupted)
    assert (run_dir / "pareto.json").exists() and result.document["study"]["n_trials"] >= 12


def test_failing_candidate_is_recorded_and_the_search_goes_on(tmp_path, monkeypatch):
    from autocompress import pipeline

    real = pipeline.Evaluator.evaluate
    calls = {"n": 0}

    def flaky(self, plan, proxy=False):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash inside the candidate")
        return real(self, plan, proxy=proxy)

    monkeypatch.setattr(pipeline.Evaluator, "evaluate", flaky)
    config = api.SearchConfig(model=TINY, target="host", trials=4, out=str(tmp_path / "run"))
    document = api.search(config).document
    assert document["study"]["n_failed"] == 1
    assert document["study"]["failures"][0]["reason"] == "RuntimeError: simulated crash inside the candidate"
    assert document["study"]["n_complete"] == 3


def test_trial_timeout_is_recorded_as_a_failure():
    from autocompress.search.study import TrialTimeout, time_limit

    with pytest.raises(TrialTimeout, match="time limit of 0.2 s"):
        with time_limit(0.2):
            time.sleep(2)


def test_a_long_traceback_keeps_its_header_and_innermost_frames():
    from autocompress.search.study import traceback_text

    def deep(n):
        if n == 0:
            raise ValueError("the innermost error")
        return deep(n - 1)

    try:
        deep(200)    # some 40,000 characters of frames, as a time limit deep in torch gives
    except ValueError:
        text = traceback_text(limit=4000)
    assert len(text) <= 4000
    assert text.startswith("Traceback (most recent call last):")
    assert text.rstrip().endswith("ValueError: the innermost error")
