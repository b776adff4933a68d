"""Non-negative least squares on relative error, shrunk toward a prior; CV error; bootstrap.

Rows are divided by the measured value, so the fit minimises squared *relative* error:
a 0.1 ms CNN and a 30 ms transformer weigh the same; samples far off the fit (a timing
another process disturbed) are down-weighted, Huber-style, over two reweighting steps.
A ridge term pulls every coefficient toward its prior (the analytical roofline's), scaled
by how large that feature is in the data: a group the samples never exercised keeps the
prior instead of an arbitrary value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import nnls

SHRINK = 0.05   # prior weight, in units of one sample's squared relative error
HUBER = 0.2     # relative residual beyond which a sample's weight decreases
ROBUST_STEPS = 2


@dataclass(frozen=True)
class LinearFit:
    names: tuple[str, ...]
    weights: tuple[float, ...]

    def predict(self, features: Mapping[str, float]) -> float:
        return float(sum(w * features.get(n, 0.0) for n, w in zip(self.names, self.weights)))

    def to_dict(self) -> dict:
        return dict(zip(self.names, self.weights))


def matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    return np.array([[float(r.get(n, 0.0)) for n in names] for r in rows], dtype=float)


def fit_relative(x: np.ndarray, y: np.ndarray, names: Sequence[str],
                 prior: Mapping[str, float], shrink: float = SHRINK) -> LinearFit:
    """Non-negative weights minimising sum(((x w - y) / y)^2) + shrink * |s (w - prior)|^2."""
    a = x / y[:, None]
    scale = np.sqrt((a ** 2).mean(axis=0)) if len(a) else np.ones(len(names))
    scale = np.where(scale > 0, scale, 1.0)
    p = np.array([prior.get(n, 0.0) for n in names])
    reg = np.sqrt(shrink) * np.diag(scale)
    trust = np.ones(len(y))
    for _ in range(1 + ROBUST_STEPS):   # Huber-like reweighting: a timing disturbed by another
        rows = a * trust[:, None]         # process (always too slow) must not drag the fit
        weights, _ = nnls(np.vstack([rows, reg]), np.concatenate([trust, reg @ p]),
                          maxiter=50 * len(names))
        residual = np.abs(a @ weights - 1.0)
        trust = 1.0 / np.sqrt(np.maximum(1.0, residual / HUBER))
    return LinearFit(tuple(names), tuple(float(w) for w in weights))


def ape(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return np.abs(predicted - measured) / measured


def cross_validated_errors(x: np.ndarray, y: np.ndarray, names, prior, folds: int = 5,
                           seed: int = 0) -> np.ndarray:
    """Absolute percentage error of each sample when predicted by a fit that never saw it."""
    order = np.random.default_rng(seed).permutation(len(y))
    errors = np.empty(len(y))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        model = fit_relative(x[train], y[train], names, prior)
        errors[test] = ape(x[test] @ np.array(model.weights), y[test])
    return errors


def bootstrap(x: np.ndarray, y: np.ndarray, names, prior, members: int = 12,
              seed: int = 0) -> list[LinearFit]:
    """Fits on resampled data: their disagreement on a candidate says how sure the model is."""
    rng = np.random.default_rng(seed)
    return [fit_relative(x[idx], y[idx], names, prior)
            for idx in (rng.integers(0, len(y), len(y)) for _ in range(members))]
