"""A finished run folder, read back for reporting: pareto.json plus every trial of the study.

The report greys dominated and infeasible trials, so it needs the whole study, not only
the front. If the study storage cannot be opened (a moved folder with a remote storage),
the report still renders from pareto.json alone and says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..compression import registry
from ..compression.plan import QUANT_BITS
from ..trial_record import METRICS_ATTR, metrics_of


class ReportError(ValueError):
    """A run folder that cannot be reported on; the message says why."""


@dataclass(frozen=True)
class TrialPoint:
    """One complete trial's numbers on the run's target (SI units)."""

    id: int
    quality: float
    latency_s: float
    size_bytes: float
    energy_j: float
    peak_ram_bytes: float
    feasible: bool
    on_front: bool
    plan: dict
    per_target: dict = field(default_factory=dict)


@dataclass
class Run:
    run_dir: Path
    document: dict
    trials: list[TrialPoint]
    knob_choices: dict[str, dict[str, tuple]]   # knob -> unit -> its choices ([0] = as is)
    study_note: str | None = None      # why dominated trials are missing, if they are
    planning: dict | None = None       # plan.json of `autocompress plan`, when present

    @property
    def front(self) -> list[dict]:
        return self.document["front"]


def load_run(run_dir: Path | str) -> Run:
    run_dir = Path(run_dir)
    path = run_dir / "pareto.json"
    if not path.is_file():
        raise ReportError(f"{run_dir}: no pareto.json (not a finished run folder; "
                          "a killed search can be finished with `autocompress search --resume`)")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from None
    planning = None
    if (run_dir / "plan.json").is_file():
        planning = json.loads((run_dir / "plan.json").read_text())
    study, note = open_run_study(run_dir, document)
    if study is None:
        trials = [_from_point(p, True) for p in document["front"]]
        return Run(run_dir, document, trials, _units_from_plans(document), note, planning)
    front_ids = {p["id"] for p in document["front"]}
    trials, choices = [], {}
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if METRICS_ATTR in t.user_attrs:
            trials.append(_from_trial(t, t.number in front_ids))
        for key, distribution in t.distributions.items():
            unit, _, knob = key.rpartition(":")
            choices.setdefault(knob, {})[unit] = tuple(getattr(distribution, "choices", ()))
    return Run(run_dir, document, trials, choices, None, planning)


def open_run_study(run_dir: Path, document: dict):
    """The run's Optuna study (its recorded storage, else ``study.db`` or ``study.journal``
    beside pareto.json)."""
    from ..search.storage import journal_url, load_study, redact

    storages = [document["study"]["storage"]]
    local = run_dir / "study.db"
    if local.is_file():
        storages.append(f"sqlite:///{local.resolve()}")
    if (run_dir / "study.journal").is_file():
        storages.append(journal_url(run_dir / "study.journal"))
    note = "study storage not found"
    for storage in storages:
        if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).is_file():
            continue
        try:
            return load_study(storage, document["study"]["name"]), None
        except Exception as err:   # noqa: BLE001 - any storage failure means "not available"
            note = f"study storage {redact(storage)} could not be opened ({type(err).__name__})"
    return None, note + ": only the front is shown"


def _from_trial(trial, on_front: bool) -> TrialPoint:
    m = metrics_of(trial)
    target = m.target
    return TrialPoint(trial.number, m.quality, target["latency_s"], m.size_bytes,
                      target["energy_j"], target["peak_ram_bytes"],
                      all(v <= 0 for v in trial.constraints.values()), on_front,
                      trial.user_attrs["plan"], m.per_target)


def _from_point(p: dict, on_front: bool) -> TrialPoint:
    return TrialPoint(p["id"], p["quality"], p["latency_s"], p["size_bytes"], p["energy_j"],
                      p["peak_ram_bytes"], True, on_front, p["plan"])


def _units_from_plans(document: dict) -> dict[str, dict[str, tuple]]:
    """Without the study the choices are unknown: each unit's "as is" value only."""
    out: dict[str, dict[str, tuple]] = {}
    for p in document["front"]:
        for unit, knobs in p["plan"].get("units", {}).items():
            for knob in knobs:
                out.setdefault(knob, {})[unit] = (registry.identity(knob),)
    return out


def knob_value(plan: dict, unit: str, knob: str, default=None):
    value = plan.get("units", {}).get(unit, {}).get(knob)
    if value is not None:
        return value
    return default if default is not None else registry.identity(knob)


def quant_label(choice: str) -> str:
    """``w8a8`` -> ``8a8``, ``w4`` -> ``4``, ``float`` -> ``32``: bits per weight (and activation)."""
    weight, act = QUANT_BITS.get(choice, (None, None))
    if weight is None:
        return str(choice)
    return f"{weight}a{act}" if act and act < 32 else str(weight)
