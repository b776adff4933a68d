"""CUDA C -> cubin for a Jetson's GPU, here and ahead of time, with NVRTC from PyPI.

NVRTC 11.8 (wheel ``nvidia-cuda-nvrtc-cu11``, called through ctypes) targets sm_53 (the
Jetson Nano's Maxwell GPU) and sm_87 (Jetson Orin). CUDA 13 no longer does sm_53 (its ptxas
starts at sm_70); CUDA 12 still does; 11.8 is the closer of the two to the
Nano's own CUDA 10.2. With a real architecture
(``--gpu-architecture=sm_53``) NVRTC runs its built-in ptxas and returns a cubin: SASS for
that GPU in an ELF file (``EM_CUDA``) that the driver loads as is, with no PTX and no JIT.

Headers come from two wheels of the same release: ``nvidia-cuda-cccl-cu11`` (libcu++
``cuda/std/*``, which TVM's kernels include under NVRTC) and ``nvidia-cuda-runtime-cu11``
(``cuda_fp16.h``, ``math_constants.h``). Options follow TVM's own NVRTC call
(``tvm.support.nvcc``): fast math, unannotated code on the device.
"""
from __future__ import annotations

import ctypes
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

WHEELS = ("nvidia-cuda-nvrtc-cu11", "nvidia-cuda-cccl-cu11", "nvidia-cuda-runtime-cu11")
EM_CUDA = 190
FORMAT = "cubin:nvrtc-11.8"
"""Part of a CUDA library's cache key: what its kernels are (bump when the options change)."""

_OPTIONS = ("-std=c++17", "-default-device", "--use_fast_math",
            "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__")
_KERNEL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\(.*\)\s*\{\s*$")
_ERROR = re.compile(r"^(.*?)\((\d+)\): (?:catastrophic )?error\b:?\s*(.*)$")


class CudaCompileError(RuntimeError):
    """No CUDA compiler, or it rejects the kernels; the message is one line."""


@dataclass(frozen=True)
class Nvrtc:
    lib: ctypes.CDLL
    version: str              # "11.8"
    archs: tuple[int, ...]    # real architectures it compiles for: 53, 87, ...
    include_dirs: tuple[Path, ...]


@lru_cache(maxsize=1)
def nvrtc() -> Nvrtc:
    """NVRTC from the CUDA 11.8 wheels (loaded once per process)."""
    try:
        import nvidia.cuda_cccl
        import nvidia.cuda_nvrtc
        import nvidia.cuda_runtime
    except ImportError as err:
        raise CudaCompileError(f"no CUDA compiler for Jetson kernels: Python package {err.name} "
                               f"is missing (pip install {' '.join(WHEELS)})") from None
    libs = sorted((Path(nvidia.cuda_nvrtc.__path__[0]) / "lib").glob("libnvrtc.so.*"))
    try:
        lib = ctypes.CDLL(str(libs[0]))
    except (IndexError, OSError) as err:
        raise CudaCompileError(f"cannot load NVRTC from {WHEELS[0]}: {err or 'no libnvrtc.so'}") from None
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    major, minor, count = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    lib.nvrtcGetNumSupportedArchs(ctypes.byref(count))
    archs = (ctypes.c_int * count.value)()
    lib.nvrtcGetSupportedArchs(archs)
    includes = tuple(Path(p.__path__[0]) / "include" for p in (nvidia.cuda_cccl, nvidia.cuda_runtime))
    return Nvrtc(lib, f"{major.value}.{minor.value}", tuple(archs), includes)


def compile_cubin(source: str, arch: str) -> bytes:
    """The cubin (SASS for ``arch``, e.g. "sm_53") of a CUDA C translation unit."""
    compiler = nvrtc()
    real = re.fullmatch(r"sm_(\d+)", arch)
    if real is None or int(real.group(1)) not in compiler.archs:
        raise CudaCompileError(f"NVRTC {compiler.version} does not compile for {arch} "
                               f"(it does sm_{compiler.archs[0]} to sm_{compiler.archs[-1]})")
    lib, program = compiler.lib, ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"tvm_kernels.cu",
                                       0, None, None), "nvrtcCreateProgram")
    try:
        options = [f"--gpu-architecture={arch}", *_OPTIONS,
                   *(f"-I{path}" for path in compiler.include_dirs)]
        encoded = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        if lib.nvrtcCompileProgram(program, len(options), encoded) != 0:
            raise CudaCompileError(_describe(_log(lib, program), source, arch, compiler.version))
        size = ctypes.c_size_t()
        _check(lib, lib.nvrtcGetCUBINSize(program, ctypes.byref(size)), "nvrtcGetCUBINSize")
        cubin = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetCUBIN(program, cubin), "nvrtcGetCUBIN")
        return cubin.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))


def cubin_arch(cubin: bytes) -> str:
    """The GPU architecture a cubin's SASS is for ("sm_53"), read from its ELF header.

    NVRTC 11.8 writes CUDA ELF ABI version 7, where ``e_flags`` bits 0-7 hold the SM version
    (bits 16-23 the virtual architecture it was lowered from)."""
    if len(cubin) < 52 or cubin[:4] != b"\x7fELF" or cubin[4] != 2:
        raise CudaCompileError("not a 64-bit ELF file, so not a cubin")
    machine, flags = struct.unpack_from("<H", cubin, 18)[0], struct.unpack_from("<I", cubin, 48)[0]
    if machine != EM_CUDA:
        raise CudaCompileError(f"ELF machine {machine} is not EM_CUDA ({EM_CUDA}): not a cubin")
    if cubin[8] != 7:
        raise CudaCompileError(f"cubin ELF ABI version {cubin[8]} (only version 7 is read here)")
    return f"sm_{flags & 0xFF}"


def _check(lib, result: int, call: str) -> None:
    if result != 0:
        raise CudaCompileError(f"{call} failed: {lib.nvrtcGetErrorString(result).decode()}")


def _log(lib, program) -> str:
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(program, log)
    return log.value.decode(errors="replace")


def _describe(log: str, source: str, arch: str, version: str) -> str:
    """One line: the first error, and the kernel whose body holds it."""
    for line in log.splitlines():
        found = _ERROR.match(line.strip())
        if found:
            where, number, message = found.groups()
            if where == "tvm_kernels.cu":
                kernel = _kernel_at(source, int(number))
                place = f"kernel {kernel}" if kernel else f"line {number} of the kernels' source"
            else:
                place = f"{Path(where).name} line {number}"
            return f"NVRTC {version} cannot compile {place} for {arch}: {message}"
    first = next((l.strip() for l in log.splitlines() if l.strip()), "no log")
    return f"NVRTC {version} cannot compile the kernels for {arch}: {first}"


def _kernel_at(source: str, line_number: int) -> str | None:
    name = None
    for line in source.splitlines()[:line_number]:
        found = _KERNEL.search(line)
        if found:
            name = found.group(1)
    return name
