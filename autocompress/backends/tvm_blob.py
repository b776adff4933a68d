"""TVM's packed-imports blob: the bytes ``export_library`` links into a library as
``__tvm_ffi__library_bin`` and TVM's runtime reads back when it loads the library.

This module swaps the CUDA module's CUDA C for compiled kernels and reads a linked library's
blob back out (for checks). Pure bytes: no TVM import.

Layout (TVM 0.27, ``src/target/codegen.cc`` ModuleSerializer over ``support::BytesOutStream``,
where a string or a vector is a little-endian u64 count followed by its items): a u64 byte
count, the import tree (two u64 vectors), then for each module group its kind (a string)
and, unless the kind is ``_lib`` (the host code, linked as machine code), its
``SaveToBytes`` (a string). A ``cuda`` module's bytes are its format (``cuda`` = CUDA C,
``ptx``, ``cubin``), its function table and its code (``CUDAModuleNode::SaveToBytes``; the
board's ``CUDAModuleLoadFromBytes`` hands a ``cubin`` straight to ``cuModuleLoadData``).
Anything else raises ``BlobError``: a TVM that changed the layout is caught, not guessed.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from pathlib import Path

SYMBOL = "__tvm_ffi__library_bin"


class BlobError(ValueError):
    """The bytes are not the layout described above."""


class _Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def u64(self) -> int:
        if self.pos + 8 > len(self.data):
            raise BlobError("blob ends inside a length")
        value = struct.unpack_from("<Q", self.data, self.pos)[0]
        self.pos += 8
        return value

    def bytes(self) -> bytes:
        size = self.u64()
        if self.pos + size > len(self.data):
            raise BlobError("blob ends inside a string")
        self.pos += size
        return self.data[self.pos - size:self.pos]

    def skip(self, size: int) -> None:
        if self.pos + size > len(self.data):
            raise BlobError("blob ends inside an array")
        self.pos += size


def _string(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def modules(blob: bytes) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    """(import tree bytes, [(kind, SaveToBytes or None for ``_lib``)]) of a packed blob."""
    size = _Reader(blob).u64()
    if size > len(blob) - 8:
        raise BlobError("blob is shorter than its length header says")
    blob, reader = blob[:8 + size], _Reader(blob, 8)
    groups = reader.u64() - 1                        # import tree: row pointers (groups + 1),
    reader.skip(8 * (groups + 1))
    reader.skip(8 * reader.u64())                    # child indices
    tree = blob[8:reader.pos]
    found = []
    for _ in range(groups):
        kind = reader.bytes().decode()
        found.append((kind, None if kind == "_lib" else reader.bytes()))
    if reader.pos != len(blob):
        raise BlobError(f"{len(blob) - reader.pos} bytes left after the last module")
    return tree, found


def pack(tree: bytes, found: list[tuple[str, bytes | None]]) -> bytes:
    body = tree + b"".join(_string(kind.encode()) + (b"" if data is None else _string(data))
                           for kind, data in found)
    return struct.pack("<Q", len(body)) + body


@dataclass(frozen=True)
class DeviceModule:
    """A device module's ``SaveToBytes``: format, function table (kernel names), code."""

    fmt: str
    kernels: tuple[str, ...]
    table: bytes              # the function table as saved
    code: bytes

    def save(self) -> bytes:
        return _string(self.fmt.encode()) + self.table + _string(self.code)


def device_module(saved: bytes) -> DeviceModule:
    """Parse a device module's bytes. The function table is a map from kernel name to
    FunctionInfo (``src/runtime/metadata.h``): name, argument types (4 bytes each), launch
    parameter tags (strings), argument extra tags (4-byte ints)."""
    reader = _Reader(saved)
    fmt = reader.bytes().decode()
    start, kernels = reader.pos, []
    for _ in range(reader.u64()):
        kernels.append(reader.bytes().decode())
        reader.bytes()
        reader.skip(4 * reader.u64())                # argument types
        for _ in range(reader.u64()):                # launch parameter tags
            reader.bytes()
        reader.skip(4 * reader.u64())                # argument extra tags
    table = saved[start:reader.pos]
    code = reader.bytes()
    if reader.pos != len(saved):
        raise BlobError(f"{len(saved) - reader.pos} bytes left after a {fmt} module's code")
    return DeviceModule(fmt, tuple(kernels), table, code)


def with_compiled_cuda(blob: bytes, source: str, code: bytes, fmt: str = "cubin") -> bytes:
    """The blob with its one CUDA module's CUDA C (``source``) replaced by ``code``."""
    tree, found = modules(blob)
    cuda = [i for i, (kind, _) in enumerate(found) if kind == "cuda"]
    if len(cuda) != 1:
        raise BlobError(f"expected one cuda module in the library, found {len(cuda)}")
    module = device_module(found[cuda[0]][1])
    if module.fmt != "cuda" or module.code != source.encode():
        raise BlobError(f"the cuda module holds {module.fmt!r} code, not the CUDA C that was compiled")
    found[cuda[0]] = ("cuda", replace(module, fmt=fmt, code=code).save())
    return pack(tree, found)


def cuda_module(blob: bytes) -> DeviceModule:
    """The CUDA module in a blob."""
    saved = [data for kind, data in modules(blob)[1] if kind == "cuda"]
    if len(saved) != 1:
        raise BlobError(f"expected one cuda module in the library, found {len(saved)}")
    return device_module(saved[0])


def library_blob(path: Path | str) -> bytes:
    """The packed blob inside a linked 64-bit little-endian ELF library (its exported
    ``__tvm_ffi__library_bin`` symbol)."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BlobError(f"{path} is not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 40)
    entsize, count = struct.unpack_from("<HH", data, 58)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * entsize) for i in range(count)]
    for _, kind, _, _, offset, size, link, _, _, symsize in sections:
        if kind not in (2, 11):                                 # SHT_SYMTAB, SHT_DYNSYM
            continue
        names = sections[link]
        for start in range(offset, offset + size, symsize):
            name_at, _, _, _, value, length = struct.unpack_from("<IBBHQQ", data, start)
            end = data.index(b"\0", names[4] + name_at)
            if data[names[4] + name_at:end] == SYMBOL.encode():
                return _at_address(data, sections, value, length)
    raise BlobError(f"{path} has no {SYMBOL} symbol")


def _at_address(data: bytes, sections, address: int, length: int) -> bytes:
    for _, kind, _, start, offset, size, *_ in sections:
        if kind != 8 and start <= address < start + size:       # not SHT_NOBITS
            return data[offset + address - start:offset + address - start + length]
    raise BlobError(f"no section holds address {address:#x}")
