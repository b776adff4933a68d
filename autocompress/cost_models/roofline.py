"""Roofline latency and energy for a device profile (the uncalibrated first estimate).

Per compute layer: max(compute time at the profile's attainable peak for the layer's
data type, memory time at its bandwidth) + a per-kernel overhead. Elementwise operators
fused into their producer cost nothing more; every other operator that runs per inference
(softmax, layer norm, transposes, dynamic quantization, weight dequantization) costs its
bytes at the memory bandwidth + one kernel overhead. Energy: see :mod:`.energy`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..device_profiles import DeviceProfile
from .energy import dynamic_energy_j
from .layers import GraphCost

MODEL_NAME = "roofline-v0"


@dataclass(frozen=True)
class Prediction:
    latency_s: float
    energy_j: float
    peak_ram_bytes: float
    model: str = MODEL_NAME
    calibration_error: float | None = None   # None: not calibrated on this device yet
    uncertainty: float | None = None         # relative spread of the calibrated ensemble


def compute_s(profile: DeviceProfile, layer) -> float:
    peak = profile.peak_ops_per_s.get(layer.dtype, profile.peak_ops_per_s["fp32"])
    return 2.0 * layer.macs / (peak * profile.efficiency)


def memory_s(profile: DeviceProfile, n_bytes: float) -> float:
    return n_bytes / profile.memory_bandwidth_bytes_per_s


def layer_roofline_s(profile: DeviceProfile, layer) -> float:
    """max(compute, memory) of one MAC layer, without the kernel overhead."""
    return max(compute_s(profile, layer), memory_s(profile, layer.weight_bytes + layer.act_bytes))


class RooflineModel:
    """Analytical cost model from the profile alone (``calibrated.CalibratedModel`` corrects it)."""

    name = MODEL_NAME

    def __init__(self, profile: DeviceProfile):
        self.profile = profile

    def layer_latency(self, layer) -> float:
        return layer_roofline_s(self.profile, layer) + self.profile.kernel_overhead_s

    def latency_s(self, graph: GraphCost) -> float:
        overhead = self.profile.kernel_overhead_s
        return (sum(self.layer_latency(layer) for layer in graph.layers)
                + sum(memory_s(self.profile, k.bytes) + overhead for k in graph.kernels))

    def peak_ram_bytes(self, graph: GraphCost) -> float:
        """Weights as the runtime holds them (unpacked to float) + live activations."""
        return graph.weight_bytes + graph.peak_activation_bytes

    def predict(self, graph: GraphCost) -> Prediction:
        latency = self.latency_s(graph)
        energy = dynamic_energy_j(self.profile, graph) + self.profile.power_w["idle"] * latency
        return Prediction(latency, energy, self.peak_ram_bytes(graph))
