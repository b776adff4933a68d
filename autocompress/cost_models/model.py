"""The one door to a device's cost model: what the rest of the package may ask of it, and
the factory that builds it.

Every cost model here (``roofline.RooflineModel``, ``calibrated.CalibratedModel``) answers
:class:`CostModel`; callers get a device's model from :func:`cost_model` only, so "which
model, calibrated on which samples" is decided in one place.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from .calibrated import CalibratedModel
from .calibration import CalibrationStore
from .layers import GraphCost
from .roofline import Prediction


@runtime_checkable
class CostModel(Protocol):
    """Latency, energy and peak RAM of one ONNX graph on one device, with provenance."""

    profile: object

    @property
    def name(self) -> str: ...

    def latency_s(self, graph: GraphCost) -> float: ...

    def peak_ram_bytes(self, graph: GraphCost) -> float: ...

    def predict(self, graph: GraphCost) -> Prediction: ...


def cost_model(profile, store: str | None = None) -> CalibratedModel:
    """The profile's roofline corrected by the measured samples in calibration store
    ``store`` (default: the profile's own; the host's TVM runs use ``host-tvm``, another
    device than ORT on the same machine). Below ``calibrated.MIN_SAMPLES`` it is the plain
    roofline and says so."""
    return CalibratedModel(profile, CalibrationStore.load(store or profile.name))
