"""Process-tree helpers for tests that stop and kill real searches (supervisor.py: the
command line's process watches a child that does the work)."""
import time
from pathlib import Path


def state(pid: int) -> str | None:
    """The process's state letter (R, S, T = stopped, Z = zombie), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """Children first, then theirs."""
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop(0))
        found += kids
        todo += kids
    return found


def stopped_below(pid: int) -> int | None:
    """A stopped (SIGSTOP) process under ``pid``: the supervised search at its stop point."""
    return next((p for p in descendants(pid) if state(p) == "T"), None)


def until(condition, what: str, timeout: float = 120):
    """``condition()``'s first truthy value, polled every 50 ms; fails after ``timeout`` s."""
    end = time.time() + timeout
    while time.time() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
