"""What a supervised child tells the parent that watches it (supervisor.py), and how a
child process ends with its parent.

At the bottom of the package: the search records the trial it runs through :func:`tell`,
the storage asks :func:`supervised`, and neither needs the supervising side.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time

SUPERVISOR_ENV = "AUTOCOMPRESS_SUPERVISOR_PID"   # set in the child: whom it ends with
NOTE_ENV = "AUTOCOMPRESS_SUPERVISOR_NOTE"         # set in the child: the descriptor of its note
OFF_ENV = "AUTOCOMPRESS_UNSUPERVISED"             # "1": the command line runs in its own process
PARENT_ENV = "AUTOCOMPRESS_PARENT_PID"            # a local worker ends when this process does


_ADOPTED: dict = {}   # the child's supervisor and note file, out of its environment


def adopt() -> int | None:
    """The child, at start: take the supervisor's variables out of the environment, so the
    processes it starts (local workers) are supervised on their own; the parent's pid."""
    if SUPERVISOR_ENV in os.environ:
        _ADOPTED.update(pid=int(os.environ.pop(SUPERVISOR_ENV)),
                        note=os.environ.pop(NOTE_ENV, None))
    return _ADOPTED.get("pid")


def supervised() -> int | None:
    """The supervising parent's pid in a supervised child, else None."""
    return _ADOPTED.get("pid") or (int(os.environ[SUPERVISOR_ENV])
                                   if os.environ.get(SUPERVISOR_ENV) else None)


def tell(**fields) -> None:
    """The child: record what it runs now (``storage``, ``study``, ``run_dir``, ``trial``)
    for its parent; nothing when unsupervised."""
    fd = _ADOPTED.get("note") or os.environ.get(NOTE_ENV)
    if not fd:
        return
    note = read_note(int(fd))
    note.update(fields)
    write_note(int(fd), note)


def read_note(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 1 << 20, 0) or b"{}")
    except (OSError, ValueError):   # half-written (killed while telling): no trial known
        return {}


def write_note(fd: int, note: dict) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(note).encode(), 0)


def end_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """Kill this process when ``parent`` dies: the kernel's parent-death signal (Linux),
    and a thread that polls the parent pid (it also covers a parent gone already)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGKILL)

    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def follow_parent() -> None:
    """A local worker (``PARENT_ENV`` set by the search that started it): end with that
    search. Nothing otherwise."""
    if os.environ.get(PARENT_ENV):
        end_with_parent(int(os.environ[PARENT_ENV]))
