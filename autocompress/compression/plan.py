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

# Knob names and their meaning; what each knob is (stage, identity, title) is in registry.py.
PRUNE_RATIO = "prune_ratio"   # fraction of channels / neurons / heads removed
RANK_RATIO = "rank_ratio"     # kept rank as a fraction of the full rank (1.0 = not factorised)
QUANT = "quant"               # "float" | "w16" | "w8" | "w4" | "w3" | "w2" | "w8a8" | "w8a8c" | "w8a8cf"
SPARSITY = "sparsity"         # 0 | .5 | .75 | .9: fraction of a layer's weights zeroed (magnitude)
CLUSTERS = "clusters"         # 0 | 16 | 64: palette size of weight clustering (0 = off)
CALIBRATION = "calibration"   # model-wide: "none" | "minmax" | "percentile" | "entropy" (static int8 acts)
VOCAB = "vocab"               # "full" | "corpus" (keep the embedding rows the corpus uses)
DROP = "drop"                 # False | True: remove a shape-preserving block (depth pruning)
SHARE = "share"               # False | True: a block reuses the preceding block's weights
DECOMP = "decomp"             # "none" | "tucker:R" | "cp:R" (conv tensor decomposition, R = rank ratio)
REPLACE = "replace"           # "none" | "ffn:R" (narrower FFN) | "dwsep" (depthwise-separable conv)
DISTILL_STEPS = "distill_steps"  # 0 | N: knowledge-distillation steps after all structural changes
EXIT_AFTER = "exit_after"      # "none" | "<container>.<k>": early exit after block k (early_exit.py)
EXIT_THRESHOLD = "exit_threshold"  # exit when confidence (or consecutive-exit cosine) >= this
WHOLE_MODEL = ""              # unit name of model-wide knobs (the root module's name)

QUANT_BITS = {"float": (32, 32), "w16": (16, 32), "w8": (8, 32), "w4": (4, 32),
              "w3": (3, 32), "w2": (2, 32), "w8a8": (8, 8), "w8a8c": (8, 8),
              "w8a8cf": (8, 8)}
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
