"""Writing files so that a reader never sees half of one."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_json_atomic(path: Path, document: dict) -> None:
    """Write to a temporary name and rename: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
