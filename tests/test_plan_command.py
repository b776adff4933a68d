"""`autocompress plan`: one search, every profile predicted per trial, a pick per target."""
import json

import optuna
import pytest
from optuna.trial import TrialState

from autocompress import pipeline
from autocompress.cli import main
from autocompress.cost_models.layers import describe
from autocompress.cost_models.roofline import RooflineModel
from autocompress.device_profiles import known_targets, resolve_target
from autocompress.planning import PlanConfig, pick, plan
from autocompress.report.build import write_report
from autocompress.search.objectives import Budget

TINY = "tests.tiny_workload:make_workload"
SIZE = 40_000


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    calls, attempts = [], []
    real = pipeline.Evaluator.evaluate

    def spy(self, plan_, proxy=False):
        metrics = real(self, plan_, proxy=proxy)
        attempts.append((plan_.digest(), metrics.fidelity))
        calls.append((self.artifact_path(plan_), self.latency_shapes, metrics))
        return metrics

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline.Evaluator, "evaluate", spy)
        result = plan(PlanConfig(model=TINY, budget=Budget(max_size_bytes=SIZE), trials=6,
                                 out=str(tmp_path_factory.mktemp("plan") / "run")))
    document = json.loads((result.run_dir / "pareto.json").read_text())
    study = optuna.load_study(study_name="autocompress", storage=document["study"]["storage"])
    return result, calls, study, attempts


def complete(study):
    return [t for t in study.get_trials() if t.state == TrialState.COMPLETE]


def test_one_evaluation_per_candidate_serves_every_target(planned):
    result, calls, study, attempts = planned
    evaluated = [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.FAIL)
                 and not t.user_attrs.get("reused_from_cache")]
    # once per plan (twice for a promoted proxy: proxy then full), never once per target
    assert len({digest for digest, _ in attempts}) == len(evaluated) <= 6
    assert len(set(attempts)) == len(attempts)
    assert len({(m.plan_digest, m.fidelity) for _, _, m in calls}) == len(calls)
    for _, _, metrics in calls:
        assert sorted(metrics.per_target) == known_targets()
    assert [r["target"] for r in result.rows] == known_targets()
    assert json.loads((result.run_dir / "plan.json").read_text())["targets"] == result.rows


def test_per_target_numbers_are_the_cost_model_and_host_measurements(planned):
    _, calls, _, _ = planned
    path, shapes, metrics = calls[0]
    graph = describe(path, shapes)
    for name in ("raspberry-pi-4", "jetson-nano"):
        predicted = RooflineModel(resolve_target(name)).predict(graph)
        numbers = metrics.per_target[name]
        assert numbers["latency_s"] == predicted.latency_s
        assert numbers["energy_j"] == predicted.energy_j
        assert numbers["provenance"]["latency_s"] == {
            "kind": "predicted", "model": "roofline-v0", "device": name, "calibration_error": None}
    host = metrics.per_target["host"]
    assert host["latency_s"] == metrics.host_latency["median_s"]
    assert host["provenance"]["latency_s"]["kind"] == "measured"


def test_each_target_gets_the_best_quality_within_its_constraints(planned):
    result, _, study, _ = planned
    for row in result.rows:
        profile = resolve_target(row["target"])
        fits = [t for t in complete(study)
                if t.user_attrs["metrics"]["size_bytes"] <= SIZE
                and t.user_attrs["metrics"]["per_target"][row["target"]]["peak_ram_bytes"]
                <= profile.ram_bytes]
        assert row["feasible"] == bool(fits)
        assert row["n_feasible"] == len(fits)
        if fits:
            best = max(t.user_attrs["metrics"]["quality"] for t in fits)
            assert row["best"]["quality"] == best and row["best"]["size_bytes"] <= SIZE


def test_a_latency_limit_splits_fast_and_slow_boards_without_new_evaluations(planned):
    _, calls, study, _ = planned
    n_calls = len(calls)
    trials = complete(study)
    fastest = {name: min(t.user_attrs["metrics"]["per_target"][name]["latency_s"] for t in trials)
               for name in known_targets() if name != "host"}
    quick, slow = min(fastest, key=fastest.get), max(fastest, key=fastest.get)
    assert fastest[quick] < fastest[slow]
    limit = (fastest[quick] + fastest[slow]) / 2
    budget = Budget(max_latency_s=limit)
    ok = pick(resolve_target(quick), trials, budget)
    blocked = pick(resolve_target(slow), trials, budget)
    assert ok["feasible"] and ok["best"]["latency_s"] <= limit
    assert not blocked["feasible"] and blocked["best"] is None
    assert "closest was trial" in blocked["reason"] and "latency <=" in blocked["reason"]
    assert len(calls) == n_calls


def test_report_of_a_plan_run_has_the_target_table(planned):
    result, _, _, _ = planned
    page = write_report(result.run_dir).html.read_text(encoding="utf-8")
    assert "Deployment plan across targets" in page
    fits = [r["target"] for r in result.rows if r["best"]]
    assert ("Within these constraints the model fits " + fits[0]) in page
    for name in known_targets():
        assert f'<td class="name">{name}</td>' in page


def test_cli_plan_with_no_feasible_target_prints_the_table_and_one_error(capsys, tmp_path):
    code = main(["plan", "--model", TINY, "--budget", "1KB", "--trials", "2", "--targets",
                 "raspberry-pi-4", "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code == 2
    assert "raspberry-pi-4" in captured.out and "no fit" in captured.out
    err = [line for line in captured.err.splitlines() if line.startswith("autocompress:")]
    assert err == [f"autocompress: error: no target meets the constraints (see the table above; "
                   f"run folder: {tmp_path / 'run'})"]
    row = json.loads((tmp_path / "run" / "plan.json").read_text())["targets"][0]
    assert "size <= 1.0 kB" in row["reason"]
    page = write_report(tmp_path / "run").html.read_text(encoding="utf-8")   # an empty front still reports
    assert "No feasible point" in page and "No target meets these constraints." in page


def test_cli_plan_unknown_target(capsys, tmp_path):
    code = main(["plan", "--model", TINY, "--targets", "toaster", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "toaster" in err[0] and "jetson-nano" in err[0]
    assert not (tmp_path / "r").exists()
