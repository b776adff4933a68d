"""Roofline latency and energy for a device profile (uncalibrated first estimate).

Per compute layer: max(compute time at the profile's attainable peak for the layer's
data type, memory time at its bandwidth) + a per-kernel overhead; elementwise ops are
taken as fused into their producer. Energy: per-MAC and per-DRAM-byte energy by data
type plus idle power over the latency.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..device_profiles import DeviceProfile
from .layers import GraphCost

MODEL_NAME = "roofline-v0"


@dataclass(frozen=True)
class Prediction:
    latency_s: float
    energy_j: float
    peak_ram_bytes: float
    model: str = MODEL_NAME
    calibration_error: float | None = None   # None: not calibrated on this device yet


class RooflineModel:
    """Analytical cost model; ``fit`` is a no-op until calibration lands (see cost-model issue)."""

    name = MODEL_NAME

    def __init__(self, profile: DeviceProfile):
        self.profile = profile

    def layer_latency(self, layer) -> float:
        p = self.profile
        peak = p.peak_ops_per_s.get(layer.dtype, p.peak_ops_per_s["fp32"]) * p.efficiency
        compute = 2.0 * layer.macs / peak
        memory = (layer.weight_bytes + layer.act_bytes) / p.memory_bandwidth_bytes_per_s
        return max(compute, memory) + p.kernel_overhead_s

    def predict(self, graph: GraphCost) -> Prediction:
        latency = sum(self.layer_latency(layer) for layer in graph.layers)
        pj_mac = self.profile.energy["pj_per_mac"]
        pj_byte = self.profile.energy["pj_per_dram_byte"]
        dynamic_pj = sum(layer.macs * pj_mac.get(layer.dtype, pj_mac["fp32"])
                         + (layer.weight_bytes + layer.act_bytes) * pj_byte
                         for layer in graph.layers)
        energy = dynamic_pj * 1e-12 + self.profile.power_w["idle"] * latency
        return Prediction(latency, energy, graph.weight_bytes + graph.peak_activation_bytes)
