"""The finalize stage: long recovery of budget-feasible candidates, its bookkeeping in the
study (a kill during it keeps what finished), the merged front, and the plain-words rule."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from autocompress import finalize, verdict
from autocompress.backends.ort_runner import make_session, run_batches
from tests.processes import stopped_below
from tests.tiny_workload import make_workload
from tests.trial_records import metrics_record

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests.tiny_workload:make_workload"
CLI = [sys.executable, "-m", "autocompress.cli"]
ARGS = ["search", "--model", TINY, "--target", "host", "--budget", "10KB", "--trials", "8",
        "--seed", "1", "--finalize", "25s", "--no-sensitivity"]


def _env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", AUTOCOMPRESS_THREADS="1",
                **extra)


def _study(run: Path) -> optuna.Study:
    return optuna.load_study(study_name="autocompress",
                             storage=f"sqlite:///{(run / 'study.db').resolve()}")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny search with a budget and a 25 s finalize box, killed (SIGKILL) when the
    long run is about to start, then resumed: what the rest of the tests read. The budget
    (10 kB) is below every uniform int8 anchor: at 20 kB uniform w8a8 fits and keeps the
    uncompressed quality, so its recovery can only lose and no final is shown."""
    run = tmp_path_factory.mktemp("fin") / "run"
    log = run.parent / "log.txt"
    with open(log, "wb") as out:
        proc = subprocess.Popen(CLI + ARGS + ["--out", str(run)], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT,
                                env=_env(AUTOCOMPRESS_STOP_AT="finalize-final"))
    try:
        end = time.time() + 300
        while not stopped_below(proc.pid) and proc.poll() is None and time.time() < end:
            time.sleep(0.05)   # the search (the command's supervised child) stops there
        assert proc.poll() is None and stopped_below(proc.pid), log.read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    probes_before, finals_before = finalize.records(_study(run))
    assert probes_before and not finals_before
    assert not (run / "pareto.json").exists()
    resumed = subprocess.run(CLI + ["search", "--resume", str(run)], cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return run, probes_before, resumed.stdout


def test_resume_after_a_kill_during_finalize_keeps_the_finished_probes(finished):
    run, probes_before, _ = finished
    probes, finals = finalize.records(_study(run))
    assert probes == probes_before                     # not run again
    assert len(finals) == 1


def test_the_recovered_point_is_its_artifact_and_keeps_both_qualities(finished):
    run, _, _ = finished
    document = json.loads((run / "pareto.json").read_text())
    recovered = [p for p in document["front"] if "recovery" in p]
    assert len(recovered) == 1
    point = recovered[0]
    assert point["untrained"]["artifact_sha256"] != point["artifact_sha256"]
    assert point["quality"] >= point["untrained"]["quality"]    # a worse final is not shown
    assert point["recovery"]["steps"] >= finalize.MIN_FINAL_STEPS
    recovery = point["recovery"]      # its own step rate, start-up left out
    assert 0 < recovery["step_seconds"] * (recovery["steps"] - 1) <= recovery["train_seconds"]
    assert point["size_bytes"] <= 10_000 and point["artifact"].endswith("-final.onnx")
    workload = make_workload()
    outputs = run_batches(make_session(run / point["artifact"]), workload.evaluation)
    assert workload.score(outputs).value == pytest.approx(point["quality"])
    assert document["finalize"]["training_data"].startswith("calibration")
    # nothing on the front is dominated by the recovered point
    for other in document["front"]:
        if other is not point:
            assert not (point["quality"] >= other["quality"]
                        and point["size_bytes"] <= other["size_bytes"]
                        and point["latency_s"] <= other["latency_s"])


def test_default_box_follows_the_budget():
    from autocompress.search.objectives import Budget

    assert finalize.box(None, Budget()) == 0.0
    assert finalize.box(None, Budget(max_size_bytes=10)) == finalize.DEFAULT_S
    assert finalize.box(0.0, Budget(max_size_bytes=10)) == 0.0
    assert finalize.box(60.0, Budget()) == 60.0


def test_merge_front_drops_what_a_final_dominates():
    a = {"id": 1, "quality": 0.80, "latency_s": 1.0, "size_bytes": 100}
    b = {"id": 2, "quality": 0.90, "latency_s": 1.0, "size_bytes": 200}
    final_a = {**a, "quality": 0.95, "untrained": {"quality": 0.80}}
    merged = finalize.merge_front([a, b], [final_a])
    assert merged == [final_a]


class _Trial:
    def __init__(self, number, quality, size, latency, fidelity="full"):
        self.number = number
        self.user_attrs = {"metrics": metrics_record(quality, size, latency, fidelity)}


def test_plain_words_when_the_best_point_keeps_under_ninety_percent():
    baseline = _Trial(0, 1.0, 1000, 0.010)
    trials = [baseline, _Trial(1, 0.96, 500, 0.006), _Trial(2, 0.91, 300, 0.004),
              _Trial(3, 0.50, 100, 0.002), _Trial(4, 0.99, 90, 0.001, fidelity="proxy")]
    front = [{"id": 3, "quality": 0.50, "size_bytes": 100, "latency_s": 0.002}]
    record = verdict.judge(front, trials, baseline, None, {})
    assert record["too_tight"] and record["keeps"] == pytest.approx(0.5)
    assert record["smallest_keeping"]["0.90"]["id"] == 2      # proxies do not count
    assert record["smallest_keeping"]["0.95"]["id"] == 1
    text = record["message"]
    assert text.startswith("The budget is too tight") and "keeps 50.0%" in text
    assert "300.0 kB" not in text and "0.3 kB" in text and "0.5 kB" in text


def test_a_share_just_under_ninety_percent_never_reads_ninety():
    """make demo kept 0.8950 of the uncompressed quality: rounded, that read 'keeps 90%' in a
    sentence saying the budget is too tight (under 90%)."""
    assert verdict.kept_share(0.8950) == "89.5%" and verdict.kept_share(0.8999) == "89.9%"
    assert verdict.kept_share(0.5) == "50.0%" and verdict.kept_share(1.0) == "100.0%"


def test_no_plain_words_when_the_budget_is_fine():
    baseline = _Trial(0, 1.0, 1000, 0.01)
    front = [{"id": 1, "quality": 0.95, "size_bytes": 500, "latency_s": 0.006}]
    record = verdict.judge(front, [baseline], baseline, None, {})
    assert not record["too_tight"] and record["message"] == ""


def test_candidates_are_the_best_then_the_budget_seeds_in_order(finished, tmp_path):
    import shutil

    from autocompress.budget_plans import SEEDS_ATTR
    from autocompress.search.objectives import Budget

    run, _, _ = finished
    shutil.copy(run / "study.db", tmp_path / "study.db")
    study = _study(tmp_path)
    budget = Budget(max_size_bytes=10_000)
    fits = finalize.candidates(study, budget, 100)      # every feasible distinct plan
    assert len(fits) >= 3
    quality = {t.number: t.user_attrs["metrics"]["quality"] for t in fits}
    assert fits[0].number == max(quality, key=lambda n: (quality[n], -n))
    seeds = [fits[-1], fits[-2]]         # two feasible plans named budget seeds, worst first
    study.set_user_attr(SEEDS_ATTR, {"seed_digests": [t.user_attrs["metrics"]["plan_digest"]
                                                      for t in seeds]})
    chosen = finalize.candidates(study, budget, 3)
    assert [t.number for t in chosen] == [fits[0].number, seeds[0].number, seeds[1].number]


def test_step_seconds_leave_start_up_out_and_read_older_records():
    assert finalize._step_seconds({"step_seconds": 0.5, "train_seconds": 70.0, "steps": 100}) == 0.5
    assert finalize._step_seconds({"train_seconds": 70.0, "steps": 100}) == 0.7


def test_probes_rank_by_the_lowest_held_quality():
    """The numbers of stop 25's demo probes: by cosine alone the winner's lagging Spearman
    would be trained longest; by the lowest of the two the coarse seed is."""
    from types import SimpleNamespace

    winner = {"quality": 0.8203, "quality_details": {"cosine_mean": 0.8203, "spearman": 0.7806}}
    coarse = {"quality": 0.8145, "quality_details": {"cosine_mean": 0.8145, "spearman": 0.8072}}
    minilm_like = SimpleNamespace(held_details=("spearman",))
    assert finalize.held_quality(winner, minilm_like) == 0.7806
    assert finalize.held_quality(coarse, minilm_like) > finalize.held_quality(winner, minilm_like)
    plain = SimpleNamespace(held_details=())
    assert finalize.held_quality(winner, plain) == 0.8203 > finalize.held_quality(coarse, plain)
    assert finalize.held_quality({"quality": 0.5}, minilm_like) == 0.5   # no details recorded
