"""Load, validate and detect device profiles.

A profile is a JSON file (schema documented in docs/device_profiles.md). Validation
names the broken field, so a hand-edited profile fails with a clear message.
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

PROFILE_DIR = Path(__file__).parent
DTYPES = ("fp32", "fp16", "int8")
NUMERIC_FIELDS = ("cores", "clock_hz", "memory_bandwidth_bytes_per_s", "ram_bytes",
                  "storage_bytes", "efficiency", "kernel_overhead_s")
SOURCED_FIELDS = NUMERIC_FIELDS + ("peak_ops_per_s", "power_w", "energy")


class ProfileError(ValueError):
    """A missing or malformed profile; the message names the file and the field."""


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    tvm_target: str | Mapping
    cross_toolchain: str | None
    compute_unit: str
    cores: int
    clock_hz: float
    peak_ops_per_s: Mapping[str, float]
    memory_bandwidth_bytes_per_s: float
    ram_bytes: float
    storage_bytes: float
    efficiency: float
    kernel_overhead_s: float
    power_w: Mapping[str, object]
    energy: Mapping[str, object]
    sources: Mapping[str, str]
    features: tuple[str, ...] = field(default_factory=tuple)
    calibration: Mapping[str, object] = field(default_factory=dict)   # `autocompress profile` raw data

    def to_dict(self) -> dict:
        data = asdict(self)
        data["features"] = list(self.features)
        if not data["calibration"]:
            del data["calibration"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping, origin: str = "<dict>") -> "DeviceProfile":
        _validate(data, origin)
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(data) - known)
        if extra:
            raise ProfileError(f"{origin}: unknown field {extra[0]!r}")
        values = dict(data)
        values.setdefault("features", ())
        values.setdefault("calibration", {})
        if not isinstance(values["calibration"], Mapping):
            _fail(origin, "calibration", "must be an object (written by `autocompress profile`)")
        values["features"] = tuple(values["features"])
        return cls(**values)


def _fail(origin: str, path: str, problem: str):
    raise ProfileError(f"{origin}: field {path!r} {problem}")


def _positive(origin: str, path: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        _fail(origin, path, f"must be a positive number, got {value!r}")


def _validate(data: Mapping, origin: str) -> None:
    if not isinstance(data, Mapping):
        raise ProfileError(f"{origin}: a profile must be a JSON object")
    for key in ("name", "description", "compute_unit"):
        if not isinstance(data.get(key), str) or not data.get(key):
            _fail(origin, key, "must be a non-empty string")
    if data["compute_unit"] not in ("cpu", "gpu"):
        _fail(origin, "compute_unit", "must be 'cpu' or 'gpu'")
    if not isinstance(data.get("tvm_target"), (str, Mapping)) or not data.get("tvm_target"):
        _fail(origin, "tvm_target", "must be a TVM target tag or a JSON target object")
    for key in NUMERIC_FIELDS:
        _positive(origin, key, data.get(key))
    if not data["efficiency"] <= 1:
        _fail(origin, "efficiency", "must be at most 1")
    peaks = data.get("peak_ops_per_s")
    if not isinstance(peaks, Mapping):
        _fail(origin, "peak_ops_per_s", "must be an object of data type -> ops per second")
    for dtype in DTYPES:
        _positive(origin, f"peak_ops_per_s.{dtype}", peaks.get(dtype))
    power = data.get("power_w")
    if not isinstance(power, Mapping):
        _fail(origin, "power_w", "must be an object with idle, typical and max watts")
    for key in ("idle", "typical", "max"):
        _positive(origin, f"power_w.{key}", power.get(key))
    energy = data.get("energy")
    if not isinstance(energy, Mapping) or not isinstance(energy.get("pj_per_mac"), Mapping):
        _fail(origin, "energy.pj_per_mac", "must be an object of data type -> picojoules")
    for dtype in DTYPES:
        _positive(origin, f"energy.pj_per_mac.{dtype}", energy["pj_per_mac"].get(dtype))
    _positive(origin, "energy.pj_per_dram_byte", energy.get("pj_per_dram_byte"))
    sources = data.get("sources")
    if not isinstance(sources, Mapping):
        _fail(origin, "sources", "must be an object naming the source of every number")
    for key in SOURCED_FIELDS:
        if not isinstance(sources.get(key), str) or not sources.get(key).strip():
            _fail(origin, f"sources.{key}", "is missing: every number needs a source")


def known_targets() -> list[str]:
    """Built-in profile names, ``host`` included."""
    return sorted([p.stem for p in PROFILE_DIR.glob("*.json")] + ["host"])


def load_profile(path: Path | str) -> DeviceProfile:
    """Load a user's profile file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile file") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ProfileError(f"{path}: not a readable JSON profile ({err})") from None
    return DeviceProfile.from_dict(data, str(path))


def resolve_target(name: str) -> DeviceProfile:
    """A built-in profile by name; ``host`` is detected from this machine."""
    if name == "host":
        return detect_host()
    path = PROFILE_DIR / f"{name}.json"
    if not path.is_file():
        raise ProfileError(f"unknown target {name!r}; known targets: {', '.join(known_targets())}")
    return load_profile(path)


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_hz() -> float:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) * 1e6
    except (OSError, ValueError):
        pass
    return 2.0e9


def _ram_bytes() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8e9


def detect_host() -> DeviceProfile:
    """This machine's profile, from /proc: cores, clock, SIMD width and int8 dot-product support."""
    flags = _cpu_flags()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    hz = _cpu_hz()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4   # fp32 lanes per vector
    flops_cycle = lanes * 2 * 2                                          # FMA x 2 units
    int8_factor = 4 if ({"avx512_vnni", "avx_vnni"} & flags or "asimddp" in flags) else 2
    features = tuple(sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimddp",
                                     "fma", "f16c", "avx512_bf16", "amx_int8"}))
    fp32 = cores * hz * flops_cycle
    return DeviceProfile(
        name="host",
        description=f"this machine: {platform.machine()}, {cores} cores, {', '.join(features) or 'no SIMD extensions found'}",
        tvm_target={"kind": "llvm", "mcpu": "native", "num-cores": cores},
        cross_toolchain=None, compute_unit="cpu", cores=cores, clock_hz=hz,
        peak_ops_per_s={"fp32": fp32, "fp16": fp32, "int8": fp32 * int8_factor},
        memory_bandwidth_bytes_per_s=20e9, ram_bytes=_ram_bytes(), storage_bytes=64e9,
        efficiency=0.3, kernel_overhead_s=5e-6,
        power_w={"idle": 10.0, "typical": 30.0, "max": 60.0},
        energy={"pj_per_mac": {"fp32": 1.2, "fp16": 1.2, "int8": 0.06}, "pj_per_dram_byte": 40.0},
        features=features,
        sources={
            "cores": "detected: CPUs this process may run on (sched_getaffinity)",
            "clock_hz": "detected: /proc/cpuinfo 'cpu MHz'",
            "peak_ops_per_s": f"derived: cores x clock x {flops_cycle} fp32 flops/cycle ({lanes} lanes, 2 FMA units); int8 x{int8_factor} ({'VNNI/dot-product' if int8_factor == 4 else 'no int8 dot-product'})",
            "memory_bandwidth_bytes_per_s": "assumed 20 GB/s until measured (autocompress profile --local)",
            "ram_bytes": "detected: physical pages x page size",
            "storage_bytes": "assumed",
            "efficiency": "assumed attainable fraction of peak; replaced by calibration",
            "kernel_overhead_s": "assumed per-operator dispatch cost",
            "power_w": "assumed: no power sensor (RAPL) readable on this machine; server-class CPU share",
            "energy": "Horowitz, ISSCC 2014 (45 nm) table scaled by 0.3 for a modern process",
        },
    )
