"""What a run ran with: package versions, recorded into pareto.json for reproducibility.

Versions come from installed package metadata, so nothing heavy (TVM) is imported.
"""
from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = {"autocompress": "autocompress", "torch": "torch", "onnx": "onnx",
            "onnxruntime": "onnxruntime", "tvm": "apache-tvm", "optuna": "optuna",
            "numpy": "numpy"}


def package_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """``{python, platform, packages: {name: version or None}}`` of this process."""
    return {"python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}",
            "packages": {name: package_version(dist) for name, dist in PACKAGES.items()}}
