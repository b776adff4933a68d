"""Apache TVM: compile a candidate's ONNX file for a device profile's target.

ONNX -> Relax (``tvm.relax.frontend.onnx``) -> ``tvm.compile`` for the profile's TVM target
(a target tag such as ``nvidia/jetson-nano`` or a JSON target dict) -> a shared library,
cross-compiled with the profile's toolchain when the target is not this machine:

- ``host``: LLVM for this CPU (``-mcpu`` from LLVM's own detection); runs here.
- Raspberry Pi profiles: LLVM aarch64 code, linked by ``aarch64-linux-gnu-gcc`` into a
  ``.so`` that TVM's runtime on the Pi loads.
- ``jetson-nano`` / ``jetson-orin-nano``: CUDA kernels as a cubin for the profile's ``arch``
  (sm_53 / sm_87), plus an aarch64 host part.

CUDA kernels are compiled here, ahead of time. Without TVM's CUDA runtime (as on this
machine) ``tvm.compile`` never calls ``tvm_callback_cuda_compile`` (only that runtime does,
when it creates a CUDA module): its CUDA module keeps the kernels as CUDA C, for the board's
TVM runtime to compile at load time. We compile that CUDA C with NVRTC 11.8 from PyPI
(``cuda_compile``; CUDA 13 no longer targets sm_53) into a cubin, check that its ELF
header names the profile's arch, and pack it in the CUDA C's place as a ``cubin`` module
(``tvm_blob``, through ``export_library``'s ``fpack_imports``): the board's driver gets SASS,
no compiler runs there. A kernel NVRTC rejects, or missing NVRTC wheels, is a ``TvmError``
naming the kernel and the compiler's first error; there is no fallback to CUDA C.

What a board needs (docs/device_profiles.md; read from NVIDIA's documents and TVM's source,
not tried on a board): a TVM 0.27 runtime built with CUDA, which calls CUDA 12.0 driver API
(``cuLaunchKernelEx``), so a CUDA 12 driver: Jetson Orin Nano on JetPack 6 (L4T R36).
The Jetson Nano's last JetPack, 4.6.x (L4T R32.6-R32.7), has a CUDA 10.2 driver and no CUDA
upgrade package, so an unmodified TVM 0.27 runtime cannot launch kernels there at all.

Before import, ``tvm_prepare`` gives TVM a copy with static input shapes, weight and shape
subgraphs folded (onnxslim) and two exact rewrites for frontend gaps; an op TVM still cannot
convert is named, with the target, in one line.

Compiled libraries are cached by (ONNX bytes, input shapes, target, tuning state; for CUDA
targets also ``cuda_compile.FORMAT``), so a candidate compiled once is not compiled again.
Untuned TVM CPU code is slow (about 10x-100x behind ONNX Runtime here); ``tvm_tuning``
applies MetaSchedule records when a tuning database for the target holds them.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from ..paths import cache_dir
from .tvm_errors import TvmError  # noqa: F401 (re-exported)

PREPARE_VERSION = 2
"""Part of the library cache key: bump when ``tvm_prepare`` changes what TVM sees."""


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
    from . import cuda_compile, tvm_tuning

    target = resolve_target(profile)
    data = Path(onnx_path).read_bytes()
    mod, tuning = None, {}
    if use_tuning and tvm_tuning.has_records(target):   # no database: skip the task extraction
        mod = import_onnx(onnx_path, input_shapes, profile.name)
        tuning = tvm_tuning.lookup(mod, target)
    key = hashlib.sha256(data + json.dumps(
        [sorted((k, list(v)) for k, v in input_shapes.items()), target.key(),
         tuning.get("digest", "untuned"), PREPARE_VERSION]
        + ([cuda_compile.FORMAT] if target.kind == "cuda" else [])).encode()).hexdigest()[:20]
    cached = cache_dir() / "tvm" / f"{key}.so"
    start = time.perf_counter()
    hit = cached.exists()
    if not hit:
        if mod is None:
            mod = import_onnx(onnx_path, input_shapes, profile.name)
        with _kernels_as_cuda_c(target):
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


@contextmanager
def _kernels_as_cuda_c(target: TvmTarget):
    """Where TVM's CUDA runtime loads (a machine with a GPU driver), ``tvm.compile`` would
    compile the kernels itself with that machine's CUDA; TVM's ``TVM_COMPILE_FORCE_FALLBACK``
    keeps them as CUDA C for ``cuda_compile``, as on machines without it (untested: no
    machine here has TVM's CUDA runtime)."""
    if target.kind != "cuda":
        yield
        return
    before = os.environ.get("TVM_COMPILE_FORCE_FALLBACK")
    os.environ["TVM_COMPILE_FORCE_FALLBACK"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TVM_COMPILE_FORCE_FALLBACK"]
        else:
            os.environ["TVM_COMPILE_FORCE_FALLBACK"] = before


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
    if target.kind == "cuda":
        kwargs["fpack_imports"] = _cubin_packer(executable, target)
    try:
        executable.export_library(str(tmp), **kwargs)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        raise TvmError(f"linking the TVM library for {target.description} failed: "
                       f"{str(err).splitlines()[0]}") from None
    os.replace(tmp, path)


def _cubin_packer(executable, target: TvmTarget):
    """``export_library``'s ``fpack_imports``: TVM's own packing, with the CUDA module's CUDA C
    replaced by its cubin for the target's arch (compiled now, before linking starts)."""
    from . import cuda_compile, tvm_blob

    source, arch = cuda_source(executable.mod), str(target.target.attrs["arch"])
    profile = target.description.split(":")[0]
    try:
        cubin = cuda_compile.compile_cubin(source, arch)
        built = cuda_compile.cubin_arch(cubin)
    except cuda_compile.CudaCompileError as err:
        raise TvmError(f"{profile}: {err}") from None
    if built != arch:
        raise TvmError(f"{profile}: NVRTC built CUDA kernels for {built}, not {arch}")

    def pack(module, is_system_lib: bool, prefix: str, workspace_dir: str) -> str:
        import tvm

        blob = tvm.get_global_func("runtime.ModulePackImportsToTensor")(module).numpy().tobytes()
        blob = tvm_blob.with_compiled_cuda(blob, source, cubin)
        host = [m for m in module._collect_dso_modules() if m.kind == "llvm"][0]
        packed = tvm.get_global_func("codegen.codegen_blob")(
            blob, is_system_lib, host.get_function("_get_target_string")(), prefix)
        path = os.path.join(workspace_dir, f"{prefix}devc.o")
        packed.write_to_file(path)
        return path

    return pack


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
    """The CUDA C of a compiled CUDA target's kernels (what ``cuda_compile`` turns into a
    cubin), found among the module's imports."""
    stack = [module]
    while stack:
        m = stack.pop()
        if m.kind == "cuda":
            return m.inspect_source("cuda")
        stack.extend(m.imports)
    raise TvmError("the library holds no CUDA module")
