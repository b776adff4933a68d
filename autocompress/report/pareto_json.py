"""pareto.json: the run's result document (schema in docs/pareto_schema.md).

Every objective value carries its provenance: measured (device, runtime, repeats,
spread) or predicted (model, calibration error).
"""
from __future__ import annotations

from ..trial_record import metrics_of


SCHEMA_VERSION = 1


def point(trial, artifact: str | None) -> dict:
    """One trial as a front point."""
    m = metrics_of(trial)
    target = m.target
    host = m.host_latency
    return {
        "id": trial.number,
        "plan_digest": m.plan_digest,
        "plan": trial.user_attrs["plan"],
        "artifact": artifact,
        "artifact_sha256": m.artifact_sha256,
        "quality": m.quality,
        "quality_metric": m.quality_metric,
        "quality_details": m.quality_details,
        "size_bytes": m.size_bytes,
        "n_params": m.n_params,
        "latency_s": target["latency_s"],
        "peak_ram_bytes": target["peak_ram_bytes"],
        "energy_j": target["energy_j"],
        "macs": target.get("macs"),
        "host_latency_s": host["median_s"],
        "host_peak_ram_bytes": m.host_peak_ram_bytes,
        "early_exit": m.early_exit,   # exit rate, per-path latency (None: no exit)
        "cost_decision": target.get("cost_decision"),   # board attached: measured or predicted, why
        "constraints": dict(trial.constraints),
        "provenance": {
            "quality": {"kind": "measured", "device": "host", "runtime": host["runtime"],
                        "data": "held-out evaluation set of the workload"},
            "size_bytes": {"kind": "measured", "method": "bytes of the artifact file"},
            "latency_s": target["provenance"]["latency_s"],
            "peak_ram_bytes": target["provenance"]["peak_ram_bytes"],
            "energy_j": target["provenance"]["energy_j"],
            "host_latency_s": {"kind": "measured", "device": "host", **host},
        },
        "timings_s": m.timings_s,
    }


def point_on_target(trial, artifact: str | None, target: str, constraints: dict) -> dict:
    """One trial as a point of another target's front (multi-target search): quality and
    size are the same, latency / energy / RAM are that target's, with their provenance."""
    numbers = metrics_of(trial).per_target[target]
    out = point(trial, artifact)
    for key in ("latency_s", "peak_ram_bytes", "energy_j"):
        out[key] = numbers[key]
        out["provenance"][key] = numbers["provenance"][key]
    out["macs"] = numbers.get("macs", out["macs"])
    out["constraints"] = dict(constraints)
    out["target"] = target
    return out
