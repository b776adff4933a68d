"""Peak-RAM measurement in a fresh process, for fitting and checking the memory model.

Measuring RSS growth in a long-lived process undercounts: the allocator reuses pages an
earlier session freed, so a small model often shows 0 bytes. Here every measurement runs
in a child forked from a clean server process that has only imported ONNX Runtime
(multiprocessing's ``forkserver``), so the growth is what loading and running the model
costs a process that has not run one yet: the number a deployment sees.
"""
from __future__ import annotations

import multiprocessing
from pathlib import Path

_CONTEXT = None


def _context():
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["numpy", "onnxruntime",
                                         "autocompress.backends.ort_runner"])
    return _CONTEXT


def _child(path: str, example: dict, threads: int, queue) -> None:
    from ..backends.ort_runner import peak_ram_here

    queue.put(peak_ram_here(path, example, threads))


def isolated_peak_ram(path: Path | str, example: dict, threads: int = 2,
                      timeout_s: float = 120.0) -> int | None:
    """Peak RSS growth (bytes) of loading ``path`` and running ``example`` once, measured in
    a fresh child process; None where /proc does not allow it."""
    ctx = _context()
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(str(path), dict(example), threads, queue))
    process.start()
    process.join(timeout_s)
    if process.is_alive():
        process.kill()
        process.join()
    if process.exitcode != 0 or queue.empty():
        return None
    return queue.get()
