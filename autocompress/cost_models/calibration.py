"""Per-device calibration data: measured samples on disk, refitted on every new one.

``cache_dir()/calibration/<device>.json`` holds the raw samples (feature vectors and what
was measured, where and how), so the correction can be refitted at any time, plus the
last fit for reading. Plain JSON, written atomically; never pickle. Samples computed
under another ``FEATURE_VERSION`` are dropped on load (they cannot be recomputed without
their graphs) and the file says how many were.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..paths import cache_dir
from ..files import write_json_atomic
from .features import FEATURE_VERSION

MAX_SAMPLES = 2000   # oldest dropped beyond this: a fit stays cheap and follows the device


@dataclass(frozen=True)
class Sample:
    """One measured candidate: its graph's features and what the device measured."""

    key: str                       # workload + plan digest (+ source): one sample per candidate
    latency_features: dict
    ram_features: dict
    latency_s: float
    peak_ram_bytes: float | None
    source: str                    # e.g. "host onnxruntime 1.x", "board pi4 over RPC (TVM)"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CalibrationStore:
    device: str
    samples: list[Sample] = field(default_factory=list)
    fit: dict = field(default_factory=dict)
    dropped: int = 0

    @staticmethod
    def path_for(device: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in device)
        return cache_dir() / "calibration" / f"{safe}.json"

    @classmethod
    def load(cls, device: str) -> "CalibrationStore":
        path = cls.path_for(device)
        if not path.is_file():
            return cls(device)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return cls(device)   # unreadable: start again rather than fail a search
        if data.get("feature_version") != FEATURE_VERSION:
            return cls(device, dropped=len(data.get("samples", [])))
        return cls(device, [Sample(**s) for s in data.get("samples", [])], data.get("fit", {}),
                   data.get("dropped", 0))

    def add(self, sample: Sample) -> bool:
        """Add (or replace, same key) a sample; True if the store changed."""
        kept = [s for s in self.samples if s.key != sample.key]
        changed = len(kept) == len(self.samples) or sample not in self.samples
        self.samples = (kept + [sample])[-MAX_SAMPLES:]
        return changed

    def save(self) -> Path:
        """Write atomically, first taking in samples other processes (search workers) saved
        since this store was loaded, so concurrent writers do not drop each other's."""
        path = self.path_for(self.device)
        path.parent.mkdir(parents=True, exist_ok=True)
        ours = {s.key for s in self.samples}
        others = [s for s in CalibrationStore.load(self.device).samples if s.key not in ours]
        self.samples = (others + self.samples)[-MAX_SAMPLES:]
        document = {"device": self.device, "feature_version": FEATURE_VERSION,
                    "n_samples": len(self.samples), "dropped": self.dropped, "fit": self.fit,
                    "samples": [s.to_dict() for s in self.samples]}
        write_json_atomic(path, document)
        return path
