"""Workloads: built-ins by name, ONNX files by path, user code as ``module:function``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .base import Batch, Outputs, Quality, Workload
from .onnx_file import WorkloadError, load_onnx_workload
from .user_code import names_code

BUILTINS = ("minilm", "digits-cnn")
DEFAULT = "minilm"

__all__ = ["BUILTINS", "DEFAULT", "Batch", "Outputs", "Quality", "Workload", "WorkloadError",
           "load_workload"]


def load_workload(spec: str, data: str | None = None, input_shapes: Sequence[str] = (),
                  metric: str | None = None) -> Workload:
    """``minilm`` | ``digits-cnn`` | ``path/to/model.onnx`` | ``package.module:function``.
    ``data``, ``input_shapes`` and ``metric`` apply to ONNX files (onnx_file.py)."""
    code = names_code(spec)
    given = [flag for flag, value in (("--data", data), ("--input-shape", input_shapes),
                                      ("--metric", metric)) if value]
    if given and (spec in BUILTINS or code):
        raise WorkloadError(f"{', '.join(given)}: for ONNX files only ({spec!r} is a "
                            "workload with its own data and metric)")
    if spec == "minilm":
        from .minilm import make_minilm_workload

        return make_minilm_workload()
    if spec == "digits-cnn":
        from .digits_cnn import make_digits_workload

        return make_digits_workload()
    if code:
        return _load_callable(spec)
    if spec.endswith(".onnx") or Path(spec).suffix or Path(spec).exists():
        return load_onnx_workload(spec, data, input_shapes, metric)
    raise WorkloadError(f"unknown model {spec!r}: use one of {', '.join(BUILTINS)}, "
                        "a path to an .onnx file, or package.module:function")


def _load_callable(spec: str) -> Workload:
    from .user_code import import_attribute

    workload = import_attribute(spec, "workload")()
    if not isinstance(workload, Workload):
        raise WorkloadError(f"{spec} returned {type(workload).__name__}, expected autocompress.Workload")
    return workload
