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
from .compression import exit_runtime
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
    per_target: dict = field(default_factory=dict)   # profile name -> numbers (plan command)
    early_exit: dict | None = None   # exit rate and each path's latency (early-exit artifacts)

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
                 artifact_root: Path | None = None, extra_profiles: tuple = (),
                 device=None):
        self.device = device            # backends.tvm_rpc.RpcDevice: measure on the board
        self.workload = workload
        self.profile = profile
        self.timing = timing
        self.cost_model = RooflineModel(profile)
        self.artifact_root = artifact_root or cache_dir() / "artifacts" / workload_key(workload)
        self.latency_shapes = {k: tuple(v.shape) for k, v in workload.example.items()}
        self.extra_profiles = tuple(extra_profiles)

    def artifact_path(self, plan: Plan) -> Path:
        return self.artifact_root / f"{plan.digest()}.onnx"

    def evaluate(self, plan: Plan) -> TrialMetrics:
        timings = {}
        start = time.perf_counter()
        artifact = apply_plan(plan, self.workload, self.artifact_path(plan), timings=timings)
        quality, latency, exits = self._quality_and_latency(artifact.path, timings)
        timings["latency"] -= time.perf_counter()
        peak_ram = ort_runner.measure_peak_ram(artifact.path, self.workload.example,
                                               self.timing.threads)
        timings["latency"] += time.perf_counter()
        timings["predict"] = -time.perf_counter()
        target = self._target_numbers(artifact.path, latency, peak_ram,
                                      exits.exit_rate if exits else None)
        if self.device is not None:
            self._device_numbers(artifact.path, target, timings)
        timings["predict"] += time.perf_counter()
        timings["total"] = time.perf_counter() - start
        return TrialMetrics(plan.digest(), artifact.sha256, quality.value, quality.metric,
                            dict(quality.details), artifact.size_bytes, artifact.n_params,
                            latency.to_dict(), peak_ram, target, timings,
                            self._per_target(artifact.path, latency, peak_ram),
                            exits.to_dict() if exits else None)

    def _quality_and_latency(self, path: Path, timings: dict):
        """Quality on the evaluation set and host latency of one artifact; an early-exit
        artifact runs input by input (its exit decision is per input), and its latency is
        the expected one over those inputs (``exits`` says how it was made up)."""
        timings["quality"] = -time.perf_counter()
        session = ort_runner.make_session(path, self.timing.threads)
        exits = None
        if exit_runtime.is_early_exit(session):
            outputs, taken = exit_runtime.run_per_input(session, self.workload.evaluation)
        else:
            outputs = ort_runner.run_batches(session, self.workload.evaluation)
        quality = self.workload.score(outputs)
        timings["quality"] += time.perf_counter()
        timings["latency"] = -time.perf_counter()
        if exit_runtime.is_early_exit(session):
            exits, latency = exit_runtime.measure(session, self.workload.example, taken,
                                                  self.timing)
        else:
            latency = ort_runner.measure_latency(session, self.workload.example, self.timing)
        timings["latency"] += time.perf_counter()
        return quality, latency, exits

    def evaluate_qat(self, plan: Plan, config) -> tuple[Path, dict]:
        """A finalist's QAT artifact (compression.qat, same format as the PTQ one) and its
        measured quality and host latency, evaluated exactly as :meth:`evaluate` does."""
        from .compression.qat import apply_qat

        timings, report = {}, {}
        path = self.artifact_root / f"{plan.digest()}-qat-{config.steps}.onnx"
        artifact = apply_qat(plan, self.workload, path, config, timings, report)
        quality, latency, exits = self._quality_and_latency(artifact.path, timings)
        return artifact.path, {
            "config": config.to_dict(), "quality": quality.value,
            "quality_details": dict(quality.details), "artifact_sha256": artifact.sha256,
            "size_bytes": artifact.size_bytes, "host_latency_s": latency.median_s,
            "host_latency": latency.to_dict(), "early_exit": exits.to_dict() if exits else None,
            "quantized_weights": report.get("quantized_weights", 0),
            "final_loss": report["losses"][-1] if report.get("losses") else None,
            "timings_s": timings}

    def _target_numbers(self, path: Path, latency, peak_ram, exit_rate=None) -> dict:
        if exit_rate is None:
            graph = describe(path, self.latency_shapes)
            prediction = self.cost_model.predict(graph)
        else:   # early exit: each path predicted, weighted by the measured exit rate
            graph, prediction = exit_runtime.expected_prediction(self.cost_model, path,
                                                                 self.latency_shapes, exit_rate)
        numbers = profile_numbers(self.profile, prediction, latency, peak_ram)
        numbers["macs"] = graph.macs
        if exit_rate is not None and self.profile.name == "host":
            numbers["provenance"]["latency_s"]["method"] = \
                "expected over the evaluation inputs (see early_exit)"
        return numbers

    def _device_numbers(self, path: Path, numbers: dict, timings: dict) -> None:
        """Replace predictions with what the board measured: the candidate compiled by TVM for
        the profile's target, uploaded and timed over TVM RPC."""
        from .backends import tvm_compile

        timings["tvm_compile"] = -time.perf_counter()
        library = tvm_compile.compile_onnx(path, self.latency_shapes, self.profile)
        timings["tvm_compile"] += time.perf_counter()
        timings["device"] = -time.perf_counter()
        measured = self.device.measure(library.path, self.workload.example,
                                       self.workload.input_names,
                                       "cuda" if library.target.kind == "cuda" else "cpu")
        timings["device"] += time.perf_counter()
        where = {"kind": "measured", "device": self.profile.name, "board": measured.board,
                 "rpc": self.device.name, "runtime": measured.runtime,
                 "tvm_tuned": library.tuned}
        numbers["latency_s"] = measured.median_s
        numbers["provenance"]["latency_s"] = {
            **where, "repeats": measured.repeats, "median_s": measured.median_s,
            "p10_s": measured.p10_s, "p90_s": measured.p90_s}
        if measured.peak_ram_bytes is not None:
            numbers["peak_ram_bytes"] = measured.peak_ram_bytes
            numbers["provenance"]["peak_ram_bytes"] = {
                **where, "method": "board's RPC session peak RSS (VmHWM) minus RSS before loading"}
        if measured.energy_j is not None:
            numbers["energy_j"] = measured.energy_j
            numbers["provenance"]["energy_j"] = {**where, "method": measured.power_source}
        numbers["device_absent_sensors"] = measured.absent

    def _per_target(self, path: Path, latency, peak_ram) -> dict:
        """Every extra profile's numbers for one artifact (quality and size are device-free)."""
        if not self.extra_profiles:
            return {}
        return per_target_numbers(describe(path, self.latency_shapes), self.extra_profiles,
                                  latency, peak_ram)

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


def per_target_numbers(graph, profiles, latency, peak_ram) -> dict:
    """Roofline latency / energy / RAM per profile; host latency and RAM are the measured ones."""
    return {profile.name: profile_numbers(profile, RooflineModel(profile).predict(graph),
                                          latency, peak_ram) for profile in profiles}


def profile_numbers(profile: DeviceProfile, prediction, latency, peak_ram) -> dict:
    """One profile's latency / energy / RAM with provenance: the cost model's prediction, or
    for ``host`` the ONNX Runtime measurements of this trial."""
    predicted = {"kind": "predicted", "model": prediction.model, "device": profile.name,
                 "calibration_error": prediction.calibration_error}
    numbers = {"latency_s": prediction.latency_s, "energy_j": prediction.energy_j,
               "peak_ram_bytes": prediction.peak_ram_bytes,
               "provenance": {"latency_s": predicted, "energy_j": predicted,
                              "peak_ram_bytes": predicted}}
    if profile.name == "host":
        numbers["latency_s"] = latency.median_s
        numbers["provenance"]["latency_s"] = {"kind": "measured", "device": "host",
                                              **latency.to_dict()}
        if peak_ram is not None:
            numbers["peak_ram_bytes"] = peak_ram
            numbers["provenance"]["peak_ram_bytes"] = {
                "kind": "measured", "device": "host", "runtime": ort_runner.RUNTIME,
                "method": "peak RSS growth while loading and running once (/proc VmHWM)"}
    return numbers
