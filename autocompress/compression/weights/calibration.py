"""Static int8 quantization (QDQ) with calibrated activation ranges, via ONNX Runtime.

Activation ranges come from running the workload's ``calibration`` batches through the
model; the method that turns the observed values into a range is a per-model choice:

- ``minmax``: the observed extremes (no clipping; sensitive to outliers),
- ``percentile``: the 99.99th percentile of |x| (clips rare outliers),
- ``entropy``: the threshold minimising KL divergence between the float and int8
  histograms (TensorRT's method).

Weights are int8, symmetric, one scale per output channel. ONNX Runtime fuses the
DequantizeLinear -> MatMul/Conv -> QuantizeLinear patterns into its QLinear int8 kernels.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from .. import fidelity

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
PERCENTILE = 99.99
HISTOGRAM_BINS = 2048
ENTROPY_BINS = 512
"""The KL search tries every threshold from 64 to 256 bins of 512: 2048 bins (TensorRT's)
costs ~40 s per trial on digits-cnn for no measured gain."""
PROXY_ENTROPY_BINS = 256
"""A proxy build's histogram: the KL search over fewer thresholds is several times faster
(the search, not the batches observed, is what entropy calibration spends its time on)."""
OP_TYPES = ("MatMul", "Conv")
MAX_BATCHES = 8
"""Calibration batches observed (the first ones): 8 x 32 sentences on minilm fix the ranges
as well as all 20 do, at 40% of the time each static trial spends calibrating."""


def quantize_static_nodes(model: onnx.ModelProto, node_names: Sequence[str], method: str,
                          batches: Sequence[dict]) -> onnx.ModelProto:
    """Statically quantize the named MatMul/Conv nodes (weights per channel, activations uint8)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; "
                         f"choose from {', '.join(CALIBRATION_METHODS)}")
    if not batches:
        raise ValueError("static quantization needs calibration batches; the workload has none")
    inputs = {i.name for i in model.graph.input}
    feeds = [{k: v for k, v in b.items() if k in inputs}
             for b in batches[:fidelity.steps(MAX_BATCHES)]]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
        cache = os.path.join(tmp, "ranges.json")
        onnx.save(model, src)
        calib = _calibrate(src, method, feeds, os.path.join(tmp, "augmented.onnx"), cache)
        with contextlib.redirect_stdout(io.StringIO()):   # ORT prints progress
            quantize_static(src, dst, None, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(OP_TYPES),
                            nodes_to_quantize=list(node_names),
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=calib,
                            calibration_cache_path=cache,
                            extra_options={"WeightSymmetric": True,
                                           "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}})
        return onnx.load(dst)


def _calibrate(model_path: str, method: str, feeds: list[dict], augmented: str, cache: str):
    """Observe activations batch by batch (batches may differ in shape) and write the ranges
    where ``quantize_static`` reads them; returns ORT's method enum."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]
    options = {"percentile": {"percentile": PERCENTILE, "num_bins": HISTOGRAM_BINS},
               # ORT's quantize_static would use 128 bins for 128 quantized bins: no search
               "entropy": {"num_bins": ENTROPY_BINS if fidelity.scale() >= 1 else PROXY_ENTROPY_BINS,
                           "num_quantized_bins": 128}}.get(method, {})
    calibrator = create_calibrator(Path(model_path), list(OP_TYPES), augmented_model_path=augmented,
                                   calibrate_method=calib, extra_options=options)
    with contextlib.redirect_stdout(io.StringIO()):
        for feed in feeds:
            calibrator.collect_data(_OneBatch(feed))
            if method == "entropy":
                cap_bins(calibrator.collector.histogram_dict, options["num_bins"])
        save_tensors_data(calibrator.compute_data(), cache)
    return calib


def cap_bins(histograms: dict, max_bins: int) -> None:
    """Re-bin every histogram wider than ``max_bins`` (adjacent bins summed, the symmetric
    range padded to a whole number of groups). ORT's collector widens a histogram at its
    bin width when a later batch reaches further: on silero-vad one activation grew to tens
    of thousands of bins, and the entropy search over them took 525 s for one trial."""
    for name, entry in list(histograms.items()):
        hist, edges, low, high, threshold = entry
        n = len(hist)
        if n <= max_bins:
            continue
        group = -(-n // max_bins)
        bins = -(-n // group)
        if (bins * group - n) % 2:
            bins += 1
        pad = (bins * group - n) // 2
        stride = float(edges[1] - edges[0])
        wider = float(threshold) + pad * stride
        summed = np.pad(hist, (pad, bins * group - n - pad)).reshape(bins, group).sum(axis=1)
        histograms[name] = (summed, np.linspace(-wider, wider, bins + 1).astype(edges.dtype),
                            low, high, wider)


class _OneBatch:
    """The smallest CalibrationDataReader: one batch, then None."""

    def __init__(self, feed: dict):
        self.items = iter([feed])

    def get_next(self):
        return next(self.items, None)
