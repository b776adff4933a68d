"""The command line runs ``search`` and ``worker`` in a child process it watches.

Why: a candidate can take its process down with it (a segfault in native code, the kernel's
out-of-memory killer). Inside the dying process nothing can tell that apart from a user's
``kill -9`` of the search, yet the two need opposite answers: a killed search must rerun
its interrupted trial however often it is killed (issue 16: no kill may cost a trial),
while a candidate that crashes its process must not be run forever. The watching parent
sees how its child died while it lives on itself:

* the child died of a crash signal (``CRASH_SIGNALS``) in a trial: the parent appends the
  signal to that trial's ``crashes`` user attr, prints one line, and goes on (``search
  --resume`` of the run folder, or the same ``worker`` command). The resume reruns the
  trial; one that crashed its process ``MAX_CRASHES`` times is failed (search/storage.py);
* the parent itself was killed (the user's kill of the search): the child ends with it (a
  parent-death signal) and no crash is recorded, so the trial only goes back to the queue;
* a signal sent to the parent (``SIGTERM``, ``SIGHUP``) is passed on and the child's end is
  not a crash; Ctrl-C reaches both through the terminal, and only the child acts on it.

The child tells the parent what it is running through a small JSON note in a nameless
temporary file the parent opened and the child inherits (its descriptor in ``NOTE_ENV``):
the study (once opened) and the trial under evaluation. The file has no name, so a killed
parent leaves nothing behind. ``main(argv)`` called from Python
(tests, notebooks) runs in the calling process, unsupervised, and so does the command line
with ``AUTOCOMPRESS_UNSUPERVISED=1`` (tests that signal the working process itself).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .crash_note import (NOTE_ENV, OFF_ENV, PARENT_ENV, SUPERVISOR_ENV, follow_parent,
                         read_note, supervised, write_note)

CRASH_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT,
                 signal.SIGKILL)                  # SIGKILL with the parent alive: out of memory
COMMANDS = ("search", "worker")
PASSED_ON = (signal.SIGTERM, signal.SIGHUP)


def wanted(command: str) -> bool:
    """Whether the command line should run ``command`` in a supervised child."""
    return command in COMMANDS and not supervised() and os.environ.get(OFF_ENV) != "1"


def run(argv: list[str]) -> int:
    """The parent: run ``autocompress <argv>`` in a child until it ends without a crash in
    a trial; returns its exit status."""
    follow_parent()   # a local worker's parent: end with its search too
    note = tempfile.TemporaryFile(prefix="autocompress-note-")   # nameless
    passed: list[int] = []
    child: list[subprocess.Popen] = []

    def pass_on(signum, frame):
        passed.append(signum)
        if child and child[0].poll() is None:
            child[0].send_signal(signum)

    for signum in PASSED_ON:
        signal.signal(signum, pass_on)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the terminal's Ctrl-C reaches the child
    try:
        while True:
            child[:] = [_start(argv, note.fileno())]
            code = child[0].wait()
            if code >= 0 or passed:
                return code if code >= 0 else 128 - code
            next_argv = _after_crash(argv, -code, read_note(note.fileno()))
            if next_argv is None:
                return 128 - code
            argv = next_argv
            write_note(note.fileno(), {})
    finally:
        note.close()


def _start(argv: list[str], note_fd: int) -> subprocess.Popen:
    root = str(Path(__file__).resolve().parents[1])
    paths = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths),
               **{SUPERVISOR_ENV: str(os.getpid()), NOTE_ENV: str(note_fd)})
    env.pop(PARENT_ENV, None)   # the child ends with this process, this one with the search
    return subprocess.Popen([sys.executable, "-m", "autocompress.cli", *argv], env=env,
                            pass_fds=(note_fd,))


def _after_crash(argv: list[str], signum: int, note: dict) -> list[str] | None:
    """Record a crash on the trial that caused it; the command that goes on (None: stop)."""
    name = signal.Signals(signum).name
    where = f" (run folder: {note['run_dir']})" if note.get("run_dir") else ""
    if signum not in CRASH_SIGNALS or note.get("trial") is None or "storage" not in note:
        print(f"autocompress: error: the {argv[0]} process died of {name} outside any "
              f"trial{where}; resume with --resume", file=sys.stderr)
        return None
    from .search.storage import record_crash

    try:
        count = record_crash(note["storage"], note["study"], note["trial"], name)
    except Exception as err:   # noqa: BLE001 - a storage we cannot reach: say so, stop
        print(f"autocompress: error: trial {note['trial']} crashed its process ({name}) and "
              f"the crash could not be recorded: {err}{where}", file=sys.stderr)
        return None
    print(f"autocompress: trial {note['trial']} crashed its process ({name}, crash {count}); "
          "the search goes on", file=sys.stderr)
    if argv[0] == "worker":
        return argv
    debug = ["--debug"] if "--debug" in argv else []
    return ["search", "--resume", note["run_dir"], *debug]
