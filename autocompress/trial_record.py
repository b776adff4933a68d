"""What one trial recorded, typed: the ``TrialMetrics`` the evaluator measures, stored in the
trial's ``metrics`` user attr and read back by every layer that looks at trials.

At the bottom of the package (like Optuna's ``FrozenTrial``): the evaluator writes it, the
search, finalize stage, reports, planning and export read it, and none reads the raw dict.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

METRICS_ATTR = "metrics"


@dataclass
class TrialMetrics:
    """Everything one candidate measured or predicted, with where each number came from."""

    plan_digest: str
    artifact_sha256: str
    quality: float
    quality_metric: str
    quality_details: dict
    size_bytes: int
    n_params: int
    host_latency: dict
    host_peak_ram_bytes: int | None
    target: dict
    timings_s: dict = field(default_factory=dict)
    per_target: dict = field(default_factory=dict)   # profile name -> numbers (plan command)
    early_exit: dict | None = None   # exit rate and each path's latency (early-exit artifacts)
    fidelity: str = "full"           # "proxy": training at a fraction of its budget (fidelity.py)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrialMetrics":
        return cls(**data)

    def objective(self, name: str) -> float:
        """Target-facing values: host measurements when the target is this machine."""
        if name == "latency_s":
            return self.target["latency_s"]
        if name == "energy_j":
            return self.target["energy_j"]
        if name == "peak_ram_bytes":
            return self.target["peak_ram_bytes"]
        return getattr(self, name)


def metrics_of(trial) -> TrialMetrics | None:
    """The metrics a trial recorded (None: it recorded none, e.g. it failed)."""
    data = trial.user_attrs.get(METRICS_ATTR)
    return None if data is None else TrialMetrics.from_dict(data)
