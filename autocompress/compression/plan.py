"""Plan: one candidate, as plain data — per-unit compression choices.

A unit is a named part of the model that a knob acts on: a layer (``layers.0.ffn.fc1``),
a pruning group named after its root layer, or an ONNX weight initializer. Each unit
maps knob names to values, e.g. ``{"quant": "w8a8", "rank_ratio": 0.5}``.
The same plan applied to the same model gives the same artifact bytes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Mapping

PLAN_VERSION = 1

# Knob names and their meaning; the search space and the appliers share these.
PRUNE_RATIO = "prune_ratio"   # fraction of channels / neurons / heads removed
RANK_RATIO = "rank_ratio"     # kept rank as a fraction of the full rank (1.0 = not factorised)
QUANT = "quant"               # "float" | "w8" | "w4" | "w8a8"
VOCAB = "vocab"               # "full" | "corpus" (keep the embedding rows the corpus uses)

QUANT_BITS = {"float": (32, 32), "w8": (8, 32), "w4": (4, 32), "w8a8": (8, 8)}
"""quant choice -> (weight bits, activation bits)."""


@dataclass(frozen=True)
class Plan:
    """Per-unit knob values. Missing units or knobs mean "leave as is"."""

    units: Mapping[str, Mapping[str, float | str]] = field(default_factory=dict)

    def get(self, unit: str, knob: str, default):
        return self.units.get(unit, {}).get(knob, default)

    def to_dict(self) -> dict:
        return {"version": PLAN_VERSION,
                "units": {u: dict(sorted(k.items())) for u, k in sorted(self.units.items())}}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Plan":
        if data.get("version", PLAN_VERSION) != PLAN_VERSION:
            raise ValueError(f"unsupported plan version {data.get('version')!r}")
        return cls({u: dict(k) for u, k in data.get("units", {}).items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """A short stable hash of the plan; names cached artifacts."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def summary(self) -> dict[str, dict[str, int]]:
        """How many units take each value of each knob, for terminal tables."""
        out: dict[str, dict[str, int]] = {}
        for knobs in self.units.values():
            for knob, value in knobs.items():
                counts = out.setdefault(knob, {})
                counts[str(value)] = counts.get(str(value), 0) + 1
        return out
