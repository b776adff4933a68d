"""A user's ONNX file as a workload: weight knobs, quality as agreement with the original.

The file is first prepared (:mod:`.onnx_prepare`: ONNX Runtime's pre-processing, weights
moved out of subgraphs), and must still compute what it did. Its inputs are the user's
``--data`` or synthetic ones that respect the declared shapes (:mod:`.onnx_inputs`);
quality is one of :mod:`.onnx_metrics`, chosen from the output's shape or by ``--metric``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import onnx

from .base import Workload, WorkloadError  # noqa: F401 (re-exported)
from .onnx_inputs import (InputError, input_specs, load_data, parse_shapes, resolve_shapes, split,
                          synthetic_feeds)

N_CALIBRATION = 8
N_EVALUATION = 32
TECHNIQUES_PATH = (
    "the ONNX graph is compressed as given: weight techniques only (quantization, sparsity, "
    "clustering, static int8). Structural ones need the model in torch; converting it needs "
    "onnx2torch, which requires torchvision, and PyPI's torchvision for torch 2.13.0 is a "
    "CUDA build that does not load with the CPU torch here")
"""What ``techniques --model FILE.onnx`` says about the structural techniques, and why."""


def load_onnx_workload(path: str | Path, data: str | Path | None = None,
                       input_shapes: Sequence[str] = (), metric: str | None = None) -> Workload:
    """The workload of an ONNX file; every problem with the file or the inputs is one
    :class:`WorkloadError` line."""
    from . import onnx_metrics
    from .onnx_prepare import prepared_path, same_outputs

    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"model file not found: {path}")
    session = _open(path)
    try:
        prepared, notes = prepared_path(path)
        model = onnx.load(str(prepared))
        specs = input_specs(model)
        if data is not None:
            if input_shapes:
                raise InputError("give --data or --input-shape, not both (the data has its shapes)")
            feeds = load_data(data, specs)
            source = f"real inputs from {Path(data).name} ({len(feeds)} input sets)"
        else:
            shapes = resolve_shapes(specs, parse_shapes(input_shapes, specs))
            feeds = synthetic_feeds(model, specs, shapes, N_CALIBRATION + N_EVALUATION)
            source = ("synthetic inputs (seeded N(0, 1) floats, token ids over their table; "
                      "give --data for real ones)")
        calibration, evaluation = split(feeds) if data is not None else \
            (feeds[:N_CALIBRATION], feeds[N_CALIBRATION:])
    except InputError as err:
        raise WorkloadError(str(err)) from None
    _check_runs(path, calibration[0], data)
    differs = same_outputs(session, prepared, calibration[:2])
    if differs:
        raise WorkloadError(f"{path.name}: the prepared copy of the model does not compute what "
                            f"the original does ({differs}); please report this file")
    from ..backends.ort_runner import run_batches

    reference = run_batches(session, evaluation)
    output_names = tuple(o.name for o in session.get_outputs())
    scorer = onnx_metrics.choose(metric, output_names, reference)
    weights_found = weight_count(model)
    return Workload(
        name=path.stem, input_names=tuple(s.name for s in specs), output_names=output_names,
        example=calibration[0], calibration=calibration, evaluation=evaluation,
        score=scorer.score, onnx_path=prepared,
        description=(f"{path.name}: {scorer.description} on {len(evaluation)} held-out "
                     f"{source.split(' (')[0]}; {weights_found} weights found"),
        data_source=source, synthetic_inputs=data is None, preparation=tuple(notes),
        techniques_path=TECHNIQUES_PATH)


def _open(path: Path):
    """An ONNX Runtime session of the user's file, checked first; one line if it cannot be."""
    try:
        onnx.checker.check_model(onnx.load(str(path)))
        from ..backends.ort_runner import make_session

        return make_session(path)
    except Exception as err:   # corrupt protobuf, invalid graph, unsupported op
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WorkloadError(f"cannot load ONNX model {path}: {first_line}") from None


def _check_runs(path: Path, feed, data) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4      # the error comes back as one line, not ORT's log
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, dict(feed))
    except Exception as err:   # noqa: BLE001 - ORT's errors for wrong shapes or values
        line = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        where = f"--data {data}" if data is not None else "the synthetic inputs"
        raise WorkloadError(f"{path.name} does not run on {where}: {line}") from None


QUANTIZED_OPS = frozenset({
    "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "QGemm", "QAttention",
    "DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulNBits",
    "MatMulBnb4", "GatherBlockQuantized", "DequantizeLinear"})
"""Ops (ONNX and ONNX Runtime's contrib ops) that compute with weights already stored as
integers: a file made of them has no float weights left for the techniques."""


def quantized_ops(path: Path) -> dict[str, int]:
    """How many nodes of each :data:`QUANTIZED_OPS` type ``path`` holds, subgraphs included."""
    from collections import Counter

    from ..compression.weights.onnx_graph import walk

    model = onnx.load(str(path), load_external_data=False)
    return dict(Counter(n.op_type for n, _ in walk(model.graph) if n.op_type in QUANTIZED_OPS))


def weight_count(model: onnx.ModelProto) -> int:
    """Weights of ``model`` a technique can reach (compression/onnx_graph.weights)."""
    from math import prod

    from ..compression.weights.onnx_graph import weights

    return sum(prod(shape) for _, shape in weights(model).values())
