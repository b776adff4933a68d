"""Where autocompress keeps things outside the repository (trained models, compiled artifacts)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root: ``$AUTOCOMPRESS_CACHE`` or ``~/.cache/autocompress``; created on demand."""
    root = Path(os.environ.get("AUTOCOMPRESS_CACHE") or Path.home() / ".cache" / "autocompress")
    root.mkdir(parents=True, exist_ok=True)
    return root
