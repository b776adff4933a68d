"""Glue from a Plan to its measured and predicted numbers (one trial's work).

plan -> artifact (cached by plan digest) -> quality on held-out data (ONNX Runtime)
-> host latency and peak RAM (measured) -> target latency, energy, RAM (predicted).
The search layer calls :meth:`Evaluator.evaluate` and knows nothing of what is inside.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .backends import ort_runner
from .compression.apply import apply_plan
from .compression.plan import Plan
from .cost_models.layers import describe
from .cost_models.roofline import RooflineModel
from .device_profiles import DeviceProfile
from .paths import cache_dir

logging.getLogger("root").setLevel(logging.ERROR)   # ORT's quantizer logs advice on root


@dataclass
class TrialMetrics:
    """Everything one candidate measured or predicted, with where each number came from."""

    plan_digest: str
    artifact_sha256: str
    quality: float
    quality_metric: str
    quality_details: dict
    size_bytes: int
    n_params: int
    host_latency: dict
    host_peak_ram_bytes: int | None
    target: dict
    timings_s: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrialMetrics":
        return cls(**data)

    def objective(self, name: str) -> float:
        """Target-facing values: host measurements when the target is this machine."""
        if name == "latency_s":
            return self.target["latency_s"]
        if name == "energy_j":
            return self.target["energy_j"]
        if name == "peak_ram_bytes":
            return self.target["peak_ram_bytes"]
        return getattr(self, name)


class Evaluator:
    """Evaluates plans of one workload for one target profile."""

    def __init__(self, workload, profile: DeviceProfile,
                 timing: ort_runner.TimingConfig = ort_runner.TimingConfig(),
                 artifact_root: Path | None = None):
        self.workload = workload
        self.profile = profile
        self.timing = timing
        self.cost_model = RooflineModel(profile)
        self.artifact_root = artifact_root or cache_dir() / "artifacts" / workload_key(workload)
        self.latency_shapes = {k: tuple(v.shape) for k, v in workload.example.items()}

    def artifact_path(self, plan: Plan) -> Path:
        return self.artifact_root / f"{plan.digest()}.onnx"

    def evaluate(self, plan: Plan) -> TrialMetrics:
        timings = {}
        start = time.perf_counter()
        artifact = apply_plan(plan, self.workload, self.artifact_path(plan), timings=timings)
        timings["quality"] = -time.perf_counter()
        session = ort_runner.make_session(artifact.path, self.timing.threads)
        outputs = ort_runner.run_batches(session, self.workload.evaluation)
        quality = self.workload.score(outputs)
        timings["quality"] += time.perf_counter()
        timings["latency"] = -time.perf_counter()
        latency = ort_runner.measure_latency(session, self.workload.example, self.timing)
        del session
        peak_ram = ort_runner.measure_peak_ram(artifact.path, self.workload.example,
                                               self.timing.threads)
        timings["latency"] += time.perf_counter()
        timings["predict"] = -time.perf_counter()
        target = self._target_numbers(artifact.path, latency, peak_ram)
        timings["predict"] += time.perf_counter()
        timings["total"] = time.perf_counter() - start
        return TrialMetrics(plan.digest(), artifact.sha256, quality.value, quality.metric,
                            dict(quality.details), artifact.size_bytes, artifact.n_params,
                            latency.to_dict(), peak_ram, target, timings)

    def _target_numbers(self, path: Path, latency, peak_ram) -> dict:
        graph = describe(path, self.latency_shapes)
        prediction = self.cost_model.predict(graph)
        predicted = {"kind": "predicted", "model": prediction.model, "device": self.profile.name,
                     "calibration_error": prediction.calibration_error}
        numbers = {"latency_s": prediction.latency_s, "energy_j": prediction.energy_j,
                   "peak_ram_bytes": prediction.peak_ram_bytes, "macs": graph.macs,
                   "provenance": {"latency_s": predicted, "energy_j": predicted,
                                  "peak_ram_bytes": predicted}}
        if self.profile.name == "host":
            measured = {"kind": "measured", "device": "host", **latency.to_dict()}
            numbers["latency_s"] = latency.median_s
            numbers["provenance"]["latency_s"] = measured
            if peak_ram is not None:
                numbers["peak_ram_bytes"] = peak_ram
                numbers["provenance"]["peak_ram_bytes"] = {
                    "kind": "measured", "device": "host", "runtime": ort_runner.RUNTIME,
                    "method": "peak RSS growth while loading and running once (/proc VmHWM)"}
        return numbers

    def export_artifact(self, plan: Plan, destination: Path) -> Path:
        """Copy a plan's cached artifact into a run folder (rebuilding it if the cache was cleared)."""
        source = self.artifact_path(plan)
        if not source.exists():
            apply_plan(plan, self.workload, source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
        return destination


def workload_key(workload) -> str:
    """Names a workload's artifact cache: its name plus a digest of its float weights or file."""
    digest = hashlib.sha256(workload.name.encode())
    if workload.model is not None:
        for name, tensor in sorted(workload.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().numpy().tobytes())
    else:
        digest.update(Path(workload.onnx_path).read_bytes())
    return f"{workload.name.replace('/', '_').replace(':', '_')}-{digest.hexdigest()[:12]}"
