"""Glue from a Plan to its measured and predicted numbers (one trial's work).

plan -> artifact (cached by plan digest) -> quality on held-out data (ONNX Runtime)
-> host latency and peak RAM (measured) -> target latency, energy, RAM (predicted).
The search layer calls :meth:`Evaluator.evaluate` and knows nothing of what is inside.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import time
from pathlib import Path

from .backends import ort_runner
from .compression import fidelity, registry
from .cost_models import exit_runtime
from .trial_record import TrialMetrics
from .compression.apply import apply_plan
from .compression.plan import Plan
from .cost_models.model import cost_model
from .cost_models.layers import describe
from .device_profiles import DeviceProfile
from .paths import cache_dir

logging.getLogger("root").setLevel(logging.ERROR)   # ORT's quantizer logs advice on root


class Evaluator:
    """Evaluates plans of one workload for one target profile."""

    def __init__(self, workload, profile: DeviceProfile,
                 timing: ort_runner.TimingConfig = ort_runner.TimingConfig(),
                 artifact_root: Path | None = None, extra_profiles: tuple = (),
                 device=None, cost: str = "auto"):
        self.device = device            # backends.tvm_rpc.RpcDevice: measure on the board
        self.cost = cost                # measured | predicted | auto (see cost_models.active)
        self.workload = workload
        self.profile = profile
        self.timing = timing
        # calibrated on this device; TVM on this machine is another device than ORT on it
        store = "host-tvm" if profile.name == "host" and device is not None else profile.name
        self.cost_model = cost_model(profile, store)
        self.host_model = self.cost_model if store == "host" else None
        self.device_measured = 0        # candidates measured on the board in this process
        self.artifact_root = artifact_root or cache_dir() / "artifacts" / workload_key(workload)
        self.latency_shapes = {k: tuple(v.shape) for k, v in workload.example.items()}
        self.extra_profiles = tuple(extra_profiles)
        self._extra_models = None       # their calibrated cost models, loaded on first use

    def artifact_path(self, plan: Plan) -> Path:
        return self.artifact_root / f"{plan.digest()}.onnx"

    def evaluate(self, plan: Plan, proxy: bool = False) -> TrialMetrics:
        """Build, measure and predict one plan. ``proxy``: a plan that trains is built with a
        fraction of its training budget (compression/fidelity.py), into its own artifact;
        a plan that trains nothing has one fidelity and is evaluated in full."""
        proxy = proxy and registry.trains(plan)
        with fidelity.proxy() if proxy else contextlib.nullcontext():
            metrics = self._evaluate(plan, proxy)
        metrics.fidelity = "proxy" if proxy else "full"
        return metrics

    def _evaluate(self, plan: Plan, proxy: bool) -> TrialMetrics:
        timings = {}
        start = time.perf_counter()
        path = self.artifact_path(plan)
        path = path.with_name(f"{path.stem}-proxy.onnx") if proxy else path
        artifact = apply_plan(plan, self.workload, path, timings=timings)
        quality, latency, exits = self._quality_and_latency(artifact.path, timings)
        timings["latency"] -= time.perf_counter()
        peak_ram = ort_runner.measure_peak_ram(artifact.path, self.workload.example,
                                               self.timing.threads)
        timings["latency"] += time.perf_counter()
        timings["predict"] = -time.perf_counter()
        target = self._target_numbers(artifact.path, latency, peak_ram,
                                      exits.exit_rate if exits else None)
        self._calibrate_host(plan, artifact.path, latency, exits)
        if self.device is not None and self._measure_on_device(target):
            self._device_numbers(artifact.path, target, timings)
            if exits is None:   # an early exit's board time is one input's path, not the graph
                self._calibrate_device(plan, target)
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

    def evaluate_qat(self, plan: Plan, config, progress=None,
                     path: Path | None = None) -> tuple[Path, dict]:
        """A QAT artifact (compression.qat, same format as the PTQ one: a finalist's short
        pass, or the finalize stage's long recovery) and its measured quality, host latency
        and target numbers, evaluated exactly as :meth:`evaluate` does."""
        from .compression.qat import apply_qat

        timings, report = {}, {}
        path = path or self.artifact_root / f"{plan.digest()}-qat-{config.steps}.onnx"
        artifact = apply_qat(plan, self.workload, path, config, timings, report, progress)
        quality, latency, exits = self._quality_and_latency(artifact.path, timings)
        peak_ram = ort_runner.measure_peak_ram(artifact.path, self.workload.example,
                                               self.timing.threads)
        target = self._target_numbers(artifact.path, latency, peak_ram,
                                      exits.exit_rate if exits else None)
        return artifact.path, {
            "config": config.to_dict(), "quality": quality.value,
            "quality_details": dict(quality.details), "artifact_sha256": artifact.sha256,
            "size_bytes": artifact.size_bytes, "host_latency_s": latency.median_s,
            "host_latency": latency.to_dict(), "early_exit": exits.to_dict() if exits else None,
            "target": target, "host_peak_ram_bytes": peak_ram,
            "quantized_weights": report.get("quantized_weights", 0),
            "recovery": report.get("recovery"),
            "final_loss": report["losses"][-1] if report.get("losses") else None,
            "timings_s": timings}

    def _target_numbers(self, path: Path, latency, peak_ram, exit_rate=None) -> dict:
        if exit_rate is None:
            graph = self._graph = describe(path, self.latency_shapes)
            prediction = self.cost_model.predict(graph)
        else:   # early exit: each path predicted, weighted by the measured exit rate
            graph, prediction = exit_runtime.expected_prediction(self.cost_model, path,
                                                                 self.latency_shapes, exit_rate)
        numbers = profile_numbers(self.profile, prediction, latency, peak_ram,
                                  measured_host=self.cost != "predicted",
                                  model=self.cost_model)
        numbers["macs"] = graph.macs
        if exit_rate is not None and self.profile.name == "host":
            numbers["provenance"]["latency_s"]["method"] = \
                "expected over the evaluation inputs (see early_exit)"
        return numbers

    def _calibrate_host(self, plan: Plan, path: Path, latency, exits) -> None:
        """Every host latency measurement joins the host's calibration (early-exit artifacts
        excepted: their latency is an expectation over inputs, not one graph's)."""
        if exits is not None:
            return
        if self.host_model is None:
            from .device_profiles import resolve_target

            self.host_model = cost_model(resolve_target("host"))
        self.host_model.observe(self._graph,
                                f"{self.workload.name}:{plan.digest()}", latency.median_s,
                                None, f"host {ort_runner.RUNTIME}, {self.timing.threads} threads")

    def _measure_on_device(self, numbers: dict) -> bool:
        """--cost auto with a board attached: measure the first few candidates and those the
        model is least sure of, predict the rest; the decision and its reason are recorded."""
        from .cost_models.active import decide

        measure, reason = decide(self.cost, self.device_measured,
                                 numbers["provenance"]["latency_s"], numbers.get("uncertainty"))
        numbers["cost_decision"] = {"measured_on_device": measure, "reason": reason}
        self.device_measured += measure
        return measure

    def _calibrate_device(self, plan: Plan, numbers: dict) -> None:
        """A board measurement joins that device's calibration (latency, and RAM if reported)."""
        prov = numbers["provenance"]
        ram = numbers["peak_ram_bytes"] if prov["peak_ram_bytes"]["kind"] == "measured" else None
        where = prov["latency_s"]
        self.cost_model.observe(self._graph, f"{self.workload.name}:{plan.digest()}",
                                numbers["latency_s"], ram, f"board {where.get('board')} via "
                                f"{where.get('rpc')}, {where.get('runtime')}")

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
        if self._extra_models is None:
            self._extra_models = {p.name: cost_model(p)
                                  for p in self.extra_profiles}
        return per_target_numbers(describe(path, self.latency_shapes), self.extra_profiles,
                                  latency, peak_ram, self._extra_models)

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


def per_target_numbers(graph, profiles, latency, peak_ram, models: dict | None = None) -> dict:
    """Cost-model latency / energy / RAM per profile (each calibrated on its own device where
    measurements exist); host latency and RAM are the measured ones."""
    models = models or {}
    out = {}
    for profile in profiles:
        model = models.get(profile.name) or cost_model(profile)
        out[profile.name] = profile_numbers(profile, model.predict(graph), latency, peak_ram,
                                            model=model)
    return out


def profile_numbers(profile: DeviceProfile, prediction, latency, peak_ram,
                    measured_host: bool = True, model=None) -> dict:
    """One profile's latency / energy / RAM with provenance: the cost model's prediction
    (model name and its calibration error on this device, per objective), or for ``host``
    the ONNX Runtime measurements of this trial unless ``measured_host`` is False
    (``--cost predicted``)."""
    predicted = {"kind": "predicted", "model": prediction.model, "device": profile.name,
                 "calibration_error": prediction.calibration_error}
    ram_model, ram_error = model.ram_provenance() if model is not None else (prediction.model, None)
    energy = {**predicted, "model": f"energy-horowitz45nm-scaled + {prediction.model} latency",
              "calibration_error": None,
              "method": "per-MAC and per-DRAM-byte energy by data type + idle power x latency; "
                        "no energy measurement to calibrate against"}
    numbers = {"latency_s": prediction.latency_s, "energy_j": prediction.energy_j,
               "peak_ram_bytes": prediction.peak_ram_bytes,
               "uncertainty": prediction.uncertainty,
               "provenance": {"latency_s": predicted, "energy_j": energy,
                              "peak_ram_bytes": {**predicted, "model": ram_model,
                                                 "calibration_error": ram_error}}}
    if profile.name == "host" and measured_host:
        numbers["latency_s"] = latency.median_s
        numbers["provenance"]["latency_s"] = {"kind": "measured", "device": "host",
                                              **latency.to_dict()}
        if peak_ram is not None:
            numbers["peak_ram_bytes"] = peak_ram
            numbers["provenance"]["peak_ram_bytes"] = {
                "kind": "measured", "device": "host", "runtime": ort_runner.RUNTIME,
                "method": "peak RSS growth while loading and running once (/proc VmHWM)"}
    return numbers
