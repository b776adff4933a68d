"""Code a user names as ``package.module:name`` (a workload factory, a metric), imported from
the current folder or ``sys.path``: the user asked for it to run."""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
"""``package.module:name``."""


def names_code(spec: str) -> bool:
    """``spec`` reads as ``package.module:name`` and is not a file that happens to look so."""
    return bool(SPEC.fullmatch(spec)) and not Path(spec).exists()


def import_attribute(spec: str, what: str):
    """The object ``spec`` names; one WorkloadError line (naming ``what``) when it cannot be imported."""
    from .base import WorkloadError

    module_name, _, name = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return getattr(importlib.import_module(module_name), name)
    except Exception as err:   # noqa: BLE001 - user code raises anything on import
        raise WorkloadError(f"cannot load {what} {spec!r}: {type(err).__name__}: {err}") from None
