"""Objectives and hard constraints of a search (SI units inside)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

OBJECTIVES = (("quality", "maximize"), ("latency_s", "minimize"), ("size_bytes", "minimize"))


class OnTarget:
    """A trial's recorded metrics seen from one target: latency, energy and RAM are that
    target's numbers (``per_target``), quality and size are the trial's own."""

    DEVICE = ("latency_s", "energy_j", "peak_ram_bytes")

    def __init__(self, metrics, numbers: dict):
        self.metrics, self.numbers = metrics, numbers

    def objective(self, name: str) -> float:
        return self.numbers[name] if name in self.DEVICE else getattr(self.metrics, name)


@dataclass(frozen=True)
class Budget:
    """Hard limits; ``None`` means unconstrained. Values in bytes, seconds, joules."""

    max_size_bytes: int | None = None
    max_latency_s: float | None = None
    max_energy_j: float | None = None
    min_quality: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Budget":
        return cls(**data)

    def violations(self, metrics) -> dict[str, float]:
        """Constraint values for Optuna (<= 0 feasible), relative so they compare across units."""
        out = {}
        if self.max_size_bytes is not None:
            out["size"] = metrics.objective("size_bytes") / self.max_size_bytes - 1
        if self.max_latency_s is not None:
            out["latency"] = metrics.objective("latency_s") / self.max_latency_s - 1
        if self.max_energy_j is not None:
            out["energy"] = metrics.objective("energy_j") / self.max_energy_j - 1
        if self.min_quality is not None:
            out["quality"] = self.min_quality - metrics.objective("quality")
        return out

    def describe(self, name: str) -> str:
        from ..units import format_energy, format_size, format_time

        return {"size": f"size <= {format_size(self.max_size_bytes or 0)}",
                "latency": f"latency <= {format_time(self.max_latency_s or 0)}",
                "energy": f"energy <= {format_energy(self.max_energy_j or 0)}",
                "quality": f"quality >= {self.min_quality}"}[name]
