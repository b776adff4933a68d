"""Kill a search at random moments, resume it each time, and compare with an undisturbed run.

    python benchmarks/crash_resume.py --kills 20                 # -> results/crash_resume.json

One undisturbed ``autocompress search`` (digits-cnn on raspberry-pi-4: every objective is
measured quality or a cost-model prediction, so two runs with one seed can agree exactly),
then the same search run again as fresh cases, each SIGKILLed after random delays (start-up,
sensitivity, queue creation, trials, pareto.json: wherever it lands; up to the undisturbed
run's wall time) and resumed with ``--resume`` after every kill until it finishes, until
``--kills`` kills in all. Prints and stores: kills, resumes completed (exit 0 or
killed by us, never an error), trials lost (finished at a kill, missing or changed at the
end), duplicated (trials beyond ``--trials``, or a plan evaluated more often than in the
undisturbed run), orphans (processes of a killed search still alive 1.5 s later), lock
leftovers, and the final best quality and hypervolume of both runs.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autocompress.search.storage import load_study  # noqa: E402

MARK = "AUTOCOMPRESS_CRASH_BENCH"


def _command(args, run: Path, resume: bool) -> list[str]:
    cli = [sys.executable, "-m", "autocompress.cli", "search"]
    if resume:
        return cli + ["--resume", str(run)]
    return cli + ["--model", args.model, "--target", args.target, "--trials", str(args.trials),
                  "--seed", str(args.seed), "--workers", str(args.workers), "--out", str(run)]


def _start(command: list[str], log: Path, token: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **{MARK: token})
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _marked(token: str) -> list[int]:
    """Live (not zombie) processes carrying this run's marker in their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if f"{MARK}={token}".encode() in environ.split(b"\0") and \
                stat[stat.rfind(")") + 2] != "Z":
            found.append(int(entry.name))
    return found


def _storage(run: Path) -> str:
    name = "study.journal" if (run / "study.journal").exists() else "study.db"
    scheme = "journal:///" if name == "study.journal" else "sqlite:///"
    return f"{scheme}{(run / name).resolve()}"


def _finished(run: Path) -> dict:
    """Trial number -> (state, values, params) of every finished trial (none yet: {})."""
    try:
        study = load_study(_storage(run), "autocompress")
    except Exception:   # noqa: BLE001 - killed before the study existed
        return {}
    return {t.number: (t.state.name, t.values, t.params)
            for t in study.get_trials(deepcopy=False) if t.state.is_finished()}


def _outcome(run: Path) -> dict:
    document = json.loads((run / "pareto.json").read_text())
    history = (document["study"]["hypervolume"] or {}).get("history") or [{}]
    study = load_study(_storage(run), "autocompress")
    trials = study.get_trials(deepcopy=False)
    return {"best_quality": max((p["quality"] for p in document["front"]), default=None),
            "hypervolume": history[-1].get("hypervolume"),
            "front": sorted(p["id"] for p in document["front"]),
            "baseline": document["baseline"] is not None,
            "n_trials": len(trials),
            "states": dict(Counter(t.state.name for t in trials)),
            "plans": Counter(t.user_attrs.get("plan_digest") for t in trials
                             if t.state.name == "COMPLETE" and not t.user_attrs.get("reused_from_cache")),
            "interrupted_reruns": sum(len(t.user_attrs.get("interruptions", [])) for t in trials)}


def undisturbed(args, work: Path) -> tuple[dict, float]:
    run = work / "undisturbed"
    start = time.monotonic()
    proc = _start(_command(args, run, False), work / "undisturbed.log", "undisturbed")
    if proc.wait() != 0:
        sys.exit(f"undisturbed run failed: see {work / 'undisturbed.log'}")
    return _outcome(run), time.monotonic() - start


def crashed(args, work: Path, case: int, most: int, max_delay: float) -> dict:
    """One case: a fresh search killed at random moments (at most ``most`` times), resumed
    after each kill until it finishes."""
    run, log = work / f"crashed-{case}", work / f"crashed-{case}.log"
    rng = random.Random(f"{args.seed}-{case}")
    kills, orphans, errors, resumes, resumed_ok, events, snapshots = 0, 0, 0, 0, 0, [], []
    proc = _start(_command(args, run, False), log, "crashed")
    while True:
        delay = rng.uniform(args.min_delay, max_delay)
        try:
            code = proc.wait(timeout=delay) if kills < most else proc.wait()
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            time.sleep(1.5)
            left = _marked("crashed")
            orphans += len(left)
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            snapshot = _finished(run)
            snapshots.append(snapshot)
            events.append({"kill": kills, "after_s": round(delay, 2), "finished": len(snapshot),
                           "orphans": len(left)})
            resumed_ok += resumes > 0   # the resume we just killed had not failed
            code = None
        if code is not None:
            if code != 0:
                errors += 1
                events.append({"error_exit": code})
                if errors > 3:
                    sys.exit(f"resume keeps failing: see {log}")
            else:
                resumed_ok += resumes > 0
                break
        resumes += 1
        proc = _start(_command(args, run, True) if (run / "config.json").exists()
                      else _command(args, run, False), log, "crashed")
    final = _finished(run)
    lost = sum(1 for snap in snapshots for n, record in snap.items() if final.get(n) != record)
    leftovers = sorted(p.name for p in run.iterdir() if p.name.endswith(".rename"))
    return {"kills": kills, "resumes": resumes, "resumes_completed": resumed_ok,
            "resume_errors": errors, "trials_lost": lost, "orphans": orphans,
            "lock_leftovers": leftovers, "events": events, **_outcome(run)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--target", default="raspberry-pi-4")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--min-delay", type=float, default=1.0, help="seconds before a kill")
    parser.add_argument("--max-delay", type=float, default=None,
                        help="seconds (default: the undisturbed run's wall time)")
    parser.add_argument("--out", default=str(ROOT / "results" / "crash_resume.json"))
    args = parser.parse_args()

    cases = []
    with tempfile.TemporaryDirectory(prefix="crash-resume-") as tmp:
        work = Path(tmp)
        reference, seconds = undisturbed(args, work)
        plans_ref = reference.pop("plans")
        max_delay = args.max_delay or seconds
        while sum(c["kills"] for c in cases) < args.kills and len(cases) < 4 * args.kills:
            result = crashed(args, work, len(cases), args.kills - sum(c["kills"] for c in cases),
                             max_delay)
            plans = result.pop("plans")
            result["duplicated"] = max(0, result["n_trials"] - args.trials) + \
                sum(max(0, n - plans_ref.get(d, 0)) for d, n in plans.items())
            result["trials_lost"] += max(0, reference["states"].get("COMPLETE", 0)
                                         - result["states"].get("COMPLETE", 0))
            result["match"] = all(result[k] == reference[k]
                                  for k in ("best_quality", "hypervolume", "front"))
            cases.append(result)
            print(f"case {len(cases) - 1}: {result['kills']} kills, lost {result['trials_lost']}, "
                  f"duplicated {result['duplicated']}, orphans {result['orphans']}, "
                  f"match {result['match']}", flush=True)
    totals = {key: sum(c[key] for c in cases) for key in (
        "kills", "resumes", "resumes_completed", "resume_errors", "trials_lost", "duplicated",
        "orphans", "interrupted_reruns")}
    totals["lock_leftovers"] = sorted({x for c in cases for x in c["lock_leftovers"]})
    totals["cases"] = len(cases)
    totals["cases_matching"] = sum(c["match"] for c in cases)
    same = all(c["match"] for c in cases)
    document = {"benchmark": "crash_resume", "command": " ".join(sys.argv),
                "config": {**vars(args), "max_delay": max_delay},
                "undisturbed": {**reference, "wall_s": round(seconds, 1)},
                "totals": totals, "cases": cases, "match": same}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(document, indent=2) + "\n")
    for key, value in totals.items():
        print(f"{key:>20}: {value}")
    for key in ("best_quality", "hypervolume", "front"):
        print(f"{key:>20}: undisturbed {reference[key]}; "
              f"{sum(c[key] == reference[key] for c in cases)} of {len(cases)} cases equal")
    print(f"{'match':>20}: {same}   -> {args.out}")


if __name__ == "__main__":
    main()
