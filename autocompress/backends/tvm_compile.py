"""Apache TVM: compile a candidate's ONNX file for a device profile's target.

ONNX -> Relax (``tvm.relax.frontend.onnx``) -> ``tvm.compile`` for the profile's TVM target
(a target tag such as ``nvidia/jetson-nano`` or a JSON target dict) -> a shared library,
cross-compiled with the profile's toolchain when the target is not this machine:

- ``host``: LLVM for this CPU (``-mcpu`` from LLVM's own detection); runs here.
- Raspberry Pi profiles: LLVM aarch64 code, linked by ``aarch64-linux-gnu-gcc`` into a
  ``.so`` that TVM's runtime on the Pi loads.
- ``jetson-nano``: CUDA kernels for sm_53 plus an aarch64 host part. TVM 0.27 keeps CUDA
  kernels as CUDA C inside the library; TVM's runtime on the board compiles them with NVRTC
  at load time (``tvm_callback_cuda_compile``).

Before import, ``tvm_prepare`` gives TVM a copy with static input shapes, weight and shape
subgraphs folded (onnxslim) and two exact rewrites for frontend gaps; an op TVM still cannot
convert is named, with the target, in one line.

Compiled libraries are cached by (ONNX bytes, input shapes, target, tuning state), so a
candidate compiled once is not compiled again. Untuned TVM CPU code is slow (about 10x-100x
behind ONNX Runtime here); ``tvm_tuning`` applies MetaSchedule records when a tuning
database for the target holds them.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from ..paths import cache_dir

PREPARE_VERSION = 2
"""Part of the library cache key: bump when ``tvm_prepare`` changes what TVM sees."""


class TvmError(RuntimeError):
    """A model TVM cannot import or compile for the target; the message says which step failed."""


@dataclass(frozen=True)
class TvmTarget:
    """A resolved TVM target: the device target, its host, and how to link a library for it."""

    target: object            # tvm.target.Target
    kind: str                 # "llvm" | "cuda" | ...
    cross_compiler: str | None
    description: str

    @property
    def runs_here(self) -> bool:
        return self.cross_compiler is None and self.kind == "llvm"

    def key(self) -> str:
        """Stable text naming the target, for cache and tuning-database keys."""
        return json.dumps(_export(self.target), sort_keys=True)


@dataclass
class CompiledLibrary:
    path: Path                # the exported shared library
    target: TvmTarget
    compile_s: float          # 0.0 when served from the cache
    cached: bool
    tuned: bool               # MetaSchedule records applied
    tuning: dict = field(default_factory=dict)   # tasks / hits from tvm_tuning, if used


def _export(target) -> dict:
    data = dict(target.export())
    out = {}
    for key, value in data.items():
        if hasattr(value, "export"):
            out[key] = _export(value)
        elif isinstance(value, (list, tuple)) or type(value).__name__ == "Array":
            out[key] = [str(v) for v in value]
        else:
            out[key] = value if isinstance(value, (int, float, bool)) else str(value)
    return out


def resolve_target(profile) -> TvmTarget:
    """The TVM target of a device profile (its ``tvm_target`` tag or JSON, host detected)."""
    import tvm
    from tvm.target import codegen

    spec = profile.tvm_target
    if isinstance(spec, Mapping):
        spec = dict(spec)
        if spec.get("mcpu") == "native":
            spec["mcpu"] = codegen.llvm_get_system_cpu()
    try:
        target = tvm.target.Target(spec)
    except Exception as err:   # TVM raises ValueError / TVMError with long text
        raise TvmError(f"profile {profile.name!r}: TVM cannot parse tvm_target {spec!r}: "
                       f"{str(err).splitlines()[0]}") from None
    kind = str(target.kind.name)
    host = target.host
    if kind != "llvm" and host is None:
        # A GPU tag without a host: the board's CPU is aarch64 for every profile we ship.
        host = tvm.target.Target("raspberry-pi/4b-aarch64").host if profile.cross_toolchain \
            else tvm.target.Target({"kind": "llvm"})
        target = tvm.target.Target(target, host=host)
    host_json = _export(target.host) if target.host is not None else _export(target)
    triple = str(host_json.get("mtriple", ""))
    cross = None
    if triple and not triple.startswith(platform.machine()):
        cross = profile.cross_toolchain or f"{triple.split('-')[0]}-linux-gnu-gcc"
    return TvmTarget(target, kind, cross, f"{profile.name}: {kind} ({triple or 'native'})")


def import_onnx(onnx_path: Path | str, input_shapes: Mapping[str, tuple], target_name: str = ""):
    """The ONNX file as a Relax IRModule with weights bound as constants (prepared by
    ``tvm_prepare``: weights and shape subgraphs folded, static input shapes)."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    from . import tvm_prepare

    name = Path(onnx_path).name
    where = f" for {target_name}" if target_name else ""
    try:
        model = tvm_prepare.prepare(onnx.load(str(onnx_path)), input_shapes)
    except Exception as err:
        raise TvmError(f"preparing {name} for TVM failed: {_first_line(err)}") from None
    missing = tvm_prepare.unsupported_ops(model)
    if missing:
        raise TvmError(f"TVM {_tvm_version()} cannot lower ONNX op {', '.join(missing)}{where}: "
                       f"its ONNX frontend has no converter ({name})")
    try:
        return from_onnx(model, shape_dict={k: list(v) for k, v in input_shapes.items()},
                         keep_params_in_input=False)
    except Exception as err:
        raise TvmError(f"TVM's ONNX importer failed on {name}{where}: {_first_line(err)}") from None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def _tvm_version() -> str:
    import tvm

    return tvm.__version__


def compile_onnx(onnx_path: Path | str, input_shapes: Mapping[str, tuple], profile,
                 out_path: Path | str | None = None, use_tuning: bool = True) -> CompiledLibrary:
    """Compile an ONNX file for the profile's target and export a loadable shared library.

    Cached under ``cache_dir()/tvm/<key>.so``; ``out_path`` (if given) receives a copy.
    When ``use_tuning`` and the target's MetaSchedule database has records for this model's
    tasks, they are applied (see ``tvm_tuning``).
    """
    from . import tvm_tuning

    target = resolve_target(profile)
    data = Path(onnx_path).read_bytes()
    mod, tuning = None, {}
    if use_tuning and tvm_tuning.has_records(target):   # no database: skip the task extraction
        mod = import_onnx(onnx_path, input_shapes, profile.name)
        tuning = tvm_tuning.lookup(mod, target)
    key = hashlib.sha256(data + json.dumps(
        [sorted((k, list(v)) for k, v in input_shapes.items()), target.key(),
         tuning.get("digest", "untuned"), PREPARE_VERSION]).encode()).hexdigest()[:20]
    cached = cache_dir() / "tvm" / f"{key}.so"
    start = time.perf_counter()
    hit = cached.exists()
    if not hit:
        if mod is None:
            mod = import_onnx(onnx_path, input_shapes, profile.name)
        executable = tvm_tuning.build(mod, target, tuning)
        _export_library(executable, target, cached)
    compiled = CompiledLibrary(cached, target, 0.0 if hit else time.perf_counter() - start,
                               hit, bool(tuning.get("applied")), tuning)
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, out_path)
        compiled.path = out_path
    return compiled


def _export_library(executable, target: TvmTarget, path: Path) -> None:
    """Link the compiled module into ``path`` atomically (cross-linking for other ISAs)."""
    from tvm.support import cc

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.so")
    kwargs = {}
    if target.cross_compiler:
        if shutil.which(target.cross_compiler) is None:
            raise TvmError(f"cross compiler {target.cross_compiler!r} not found; install Debian's "
                           f"gcc-aarch64-linux-gnu (scripts/system-packages.sh)")
        kwargs["fcompile"] = cc.cross_compiler(target.cross_compiler)
    try:
        executable.export_library(str(tmp), **kwargs)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        raise TvmError(f"linking the TVM library for {target.description} failed: "
                       f"{str(err).splitlines()[0]}") from None
    os.replace(tmp, path)


def elf_machine(path: Path | str) -> str:
    """The ELF machine of a shared library ("x86-64", "aarch64", ...), read from its header."""
    header = Path(path).read_bytes()[:20]
    if header[:4] != b"\x7fELF":
        raise TvmError(f"{path} is not an ELF file")
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return {0x3E: "x86-64", 0xB7: "aarch64", 0x28: "arm", 0x03: "x86"}.get(machine, hex(machine))


def load_local(path: Path | str):
    """A Relax VM over a library compiled for this machine, on the CPU."""
    import tvm
    from tvm import relax

    return relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())


def run_local(path: Path | str, inputs: Mapping[str, np.ndarray], input_names) -> list[np.ndarray]:
    """Run a host library once on ``inputs`` (ordered by ``input_names``); outputs as numpy."""
    import tvm

    vm = load_local(path)
    args = [tvm.runtime.tensor(np.require(inputs[n], requirements="C")) for n in input_names]
    return _to_numpy(vm["main"](*args))


def _to_numpy(out) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [x for item in out for x in _to_numpy(item)]


def cuda_source(module) -> str:
    """The CUDA C of a compiled CUDA target's kernels (what the board's NVRTC compiles), found
    among the module's imports."""
    stack = [module]
    while stack:
        m = stack.pop()
        if m.kind == "cuda":
            return m.inspect_source("cuda")
        stack.extend(m.imports)
    raise TvmError("the library holds no CUDA module")
