"""A user's ONNX file as a workload: quantization knobs, fidelity on synthetic inputs.

With no data or metric given, quality is how closely the compressed model's outputs
follow the original's (mean cosine over seeded random inputs). For a real metric,
write a ``module:function`` workload instead (see the README).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from .base import Quality, Workload

N_CALIBRATION = 8
N_EVALUATION = 16


class WorkloadError(ValueError):
    """A model that cannot be used; the message says which file or name and why."""


def load_onnx_workload(path: str | Path) -> Workload:
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        from ..backends.ort_runner import make_session, run_batches

        session = make_session(path)
    except Exception as err:   # corrupt protobuf, invalid graph, unsupported op
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WorkloadError(f"cannot load ONNX model {path}: {first_line}") from None
    inputs = session.get_inputs()
    rng = np.random.default_rng(0)
    batches = [_random_batch(inputs, rng) for _ in range(N_CALIBRATION + N_EVALUATION)]
    calibration, evaluation = batches[:N_CALIBRATION], batches[N_CALIBRATION:]
    reference = run_batches(session, evaluation)

    def score(outputs) -> Quality:
        cosines = [_cosine(o, r) for out, ref in zip(outputs, reference) for o, r in zip(out, ref)]
        return Quality(float(np.mean(cosines)), "output_cosine",
                       {"cosine_mean": float(np.mean(cosines)), "cosine_min": float(np.min(cosines))})

    return Workload(
        name=path.stem, input_names=tuple(i.name for i in inputs),
        output_names=tuple(o.name for o in session.get_outputs()),
        example=batches[0], calibration=calibration, evaluation=evaluation, score=score,
        onnx_path=path.resolve(),
        description=f"{path.name}: fidelity to the original outputs on {N_EVALUATION} seeded random inputs")


def _random_batch(inputs, rng) -> dict[str, np.ndarray]:
    batch = {}
    for spec in inputs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        dtype = _dtype(spec.type)
        if np.issubdtype(dtype, np.floating):
            batch[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            batch[spec.name] = np.ones(shape, dtype)
        else:
            batch[spec.name] = rng.integers(0, 100, shape).astype(dtype)
    return batch


def _dtype(ort_type: str):
    names = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
             "tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
             "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
    if ort_type not in names:
        raise WorkloadError(f"unsupported input type {ort_type}")
    return names[ort_type]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if not np.all(np.isfinite(a)):
        return 0.0
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else float(np.allclose(a, b))
