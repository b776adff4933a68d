"""The roofline corrected by measurements of one device, with its error stated.

Latency = a non-negative combination of the roofline's per-group seconds and kernel
counts (:mod:`.features`), fitted to the device's measured samples (:mod:`.fit`); peak
RAM = a non-negative combination of runtime weight bytes, the activation liveness peak,
operator count and a per-session constant (the runtime's own overhead). The stated
calibration error is the cross-validated median absolute percentage error on this
device's samples; an ensemble of bootstrap fits gives each prediction's uncertainty
(what the active search measures first). Below ``MIN_SAMPLES`` the model is the plain
roofline and says it is uncalibrated.
"""
from __future__ import annotations

import numpy as np

from .calibration import CalibrationStore, Sample
from .energy import dynamic_energy_j
from .features import (LATENCY_FEATURES, RAM_FEATURES, latency_features, prior_latency_weights,
                       ram_features)
from .fit import LinearFit, bootstrap, cross_validated_errors, fit_relative, matrix
from .layers import GraphCost
from .roofline import Prediction, RooflineModel

CALIBRATED_NAME = "roofline+nnls-v1"
MIN_SAMPLES = 8
RAM_PRIOR = {"weights": 1.0, "activations": 1.0, "nodes": 0.0, "session": 0.0}


class CalibratedModel:
    """fit/predict over a device's :class:`CalibrationStore`; ``observe`` adds a measurement."""

    def __init__(self, profile, store: CalibrationStore | None = None, persist: bool = True):
        self.profile = profile
        self.store = store if store is not None else CalibrationStore(profile.name)
        self.persist = persist
        self.roofline = RooflineModel(profile)
        self.latency_ = self.ram_ = None
        self.ensemble_: list[LinearFit] = []
        self.latency_error_ = self.ram_error_ = None
        self.fit()

    @property
    def name(self) -> str:
        return CALIBRATED_NAME if self.latency_ is not None else self.roofline.name

    def fit(self) -> "CalibratedModel":
        samples = self.store.samples
        self.latency_ = self.ram_ = None
        self.ensemble_ = []
        self.latency_error_ = self.ram_error_ = None
        if len(samples) >= MIN_SAMPLES:
            x = matrix([s.latency_features for s in samples], LATENCY_FEATURES)
            y = np.array([s.latency_s for s in samples])
            prior = prior_latency_weights(self.profile)
            self.latency_ = fit_relative(x, y, LATENCY_FEATURES, prior)
            self.latency_error_ = float(np.median(
                cross_validated_errors(x, y, LATENCY_FEATURES, prior, min(5, len(y)))))
            self.ensemble_ = bootstrap(x, y, LATENCY_FEATURES, prior)
        ram = [s for s in samples if s.peak_ram_bytes]
        if len(ram) >= MIN_SAMPLES:
            x = matrix([s.ram_features for s in ram], RAM_FEATURES)
            y = np.array([s.peak_ram_bytes for s in ram], dtype=float)
            self.ram_ = fit_relative(x, y, RAM_FEATURES, RAM_PRIOR)
            self.ram_error_ = float(np.median(
                cross_validated_errors(x, y, RAM_FEATURES, RAM_PRIOR, min(5, len(y)))))
        self.store.fit = self.summary()
        return self

    def summary(self) -> dict:
        return {"model": self.name, "n_samples": len(self.store.samples),
                "latency_mdape_cv": self.latency_error_, "peak_ram_mdape_cv": self.ram_error_,
                "latency_weights": self.latency_.to_dict() if self.latency_ else None,
                "peak_ram_weights": self.ram_.to_dict() if self.ram_ else None}

    def latency_s(self, graph: GraphCost) -> float:
        if self.latency_ is None:
            return self.roofline.latency_s(graph)
        return self.latency_.predict(latency_features(self.profile, graph))

    def peak_ram_bytes(self, graph: GraphCost) -> float:
        if self.ram_ is None:
            return self.roofline.peak_ram_bytes(graph)
        return self.ram_.predict(ram_features(graph))

    def uncertainty(self, graph: GraphCost) -> float | None:
        """Relative spread (std / mean) of the bootstrap fits' latencies; None uncalibrated."""
        if not self.ensemble_:
            return None
        f = latency_features(self.profile, graph)
        values = np.array([m.predict(f) for m in self.ensemble_])
        return float(values.std() / max(values.mean(), 1e-12))

    def predict(self, graph: GraphCost) -> Prediction:
        latency = self.latency_s(graph)
        energy = dynamic_energy_j(self.profile, graph) + self.profile.power_w["idle"] * latency
        return Prediction(latency, energy, self.peak_ram_bytes(graph), self.name,
                          self.latency_error_, self.uncertainty(graph))

    def ram_provenance(self) -> tuple[str, float | None]:
        """(model name, calibration error) of the peak-RAM prediction."""
        return ((CALIBRATED_NAME, self.ram_error_) if self.ram_ is not None
                else ("liveness-v0", None))

    def observe(self, graph: GraphCost, key: str, latency_s: float | None,
                peak_ram_bytes: float | None, source: str) -> None:
        """Add one measured candidate to this device's calibration, refit, persist."""
        if not latency_s or latency_s <= 0:
            return
        sample = Sample(key, latency_features(self.profile, graph), ram_features(graph),
                        float(latency_s), float(peak_ram_bytes) if peak_ram_bytes else None,
                        source)
        if self.store.add(sample):
            self.fit()
            if self.persist:
                self.store.save()

