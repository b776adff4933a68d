"""Test hook: stop this process at a named point, so a test can SIGKILL it exactly there.

Crash windows last milliseconds; a test cannot hit them by timing. With
``AUTOCOMPRESS_STOP_AT=queue`` (inside trial-queue creation, after the first anchor) or
``trial-N`` (inside trial N, its plan recorded, before it is evaluated) the process sends
itself SIGSTOP at that point; the test then kills it for real. ``AUTOCOMPRESS_CRASH_AT``
(same points) makes the process segfault there for real, as a candidate's native code can.
Unset: one dict lookup.
"""
from __future__ import annotations

import os
import signal

ENV = "AUTOCOMPRESS_STOP_AT"
CRASH_ENV = "AUTOCOMPRESS_CRASH_AT"


def stop_at(point: str) -> None:
    if os.environ.get(ENV) == point:
        os.kill(os.getpid(), signal.SIGSTOP)


def crash_at(point: str) -> None:
    if os.environ.get(CRASH_ENV) == point:
        import ctypes

        ctypes.string_at(0)   # reads address 0: SIGSEGV
