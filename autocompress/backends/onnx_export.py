"""torch -> ONNX export (TorchScript exporter: fast and byte-for-byte reproducible)."""
from __future__ import annotations

import io
import warnings

import onnx
import torch

EXPORT_OPSET = 17


def export_onnx(model: torch.nn.Module, workload) -> onnx.ModelProto:
    """Export ``model`` with the workload's input/output names and dynamic axes."""
    args = tuple(torch.from_numpy(workload.example[name]) for name in workload.input_names)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, args, buffer, dynamo=False, opset_version=EXPORT_OPSET,
            input_names=list(workload.input_names), output_names=list(workload.output_names),
            dynamic_axes={k: dict(v) for k, v in (workload.dynamic_axes or {}).items()},
            do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())
