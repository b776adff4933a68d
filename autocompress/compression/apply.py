"""apply(plan, workload) -> a real ONNX artifact on disk.

Order: the torch stage (``registry.TORCH_STAGE``: vocabulary -> structured pruning ->
drop / share blocks -> BatchNorm folding -> low-rank -> conv decomposition -> module
replacing -> distillation; compression/structural/precedence.py says why) -> ONNX export -> weight
storage (quantization, sparsity, clustering; ONNX). Every step changes real
tensors; the artifact's size is its file.
"""
from __future__ import annotations

import copy
import hashlib
import os
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from . import registry
from .structural import precedence
from .initializers import match_initializers
from .compact import compact_graph
from .plan import CALIBRATION, CLUSTERS, QUANT, QUANT_BITS, SPARSITY, WHOLE_MODEL, Plan
from .records import PlanError, TorchStage
from .registry import WEIGHT_KNOBS
from .weights.quantize import to_opset, weight_initializers
from .weights.storage import NO_CALIBRATION, WeightPlan, compress_weights


@dataclass(frozen=True)
class Artifact:
    path: Path
    size_bytes: int
    n_params: int
    sha256: str


def apply_plan(plan: Plan, workload, out_path: Path, timings: dict | None = None,
               model: nn.Module | None = None) -> Artifact:
    """Compress the workload's model by ``plan`` and write the ONNX file to ``out_path``.

    ``timings`` (if given) receives seconds spent in ``apply`` (torch stage) and ``export``
    (ONNX export, quantization, writing). ``model`` (if given) is the plan's torch stage
    already done (e.g. fine-tuned by QAT): it is exported and quantized the normal way.
    """
    timings = {} if timings is None else timings
    start = time.perf_counter()
    if workload.model is not None:
        from .early_exit import build as build_early_exit, plan_exit

        if model is None and plan_exit(plan) is None:
            proto, units = _torch_stage_onnx(plan, workload, timings)
        else:
            model = compress_torch(plan, workload) if model is None else model
            timings["apply"] = time.perf_counter() - start
            if plan_exit(plan) is not None:   # segments + If node, each segment stored as below
                artifact = write_artifact(compact_graph(build_early_exit(plan, workload, model)),
                                          out_path)
                timings["export"] = time.perf_counter() - start - timings["apply"]
                return artifact
            proto, units = _exported(model, workload)
    else:
        timings["apply"] = 0.0
        proto = to_opset(onnx.load(str(workload.onnx_path)))
        units = {name: name for name in weight_initializers(proto)}
    unknown = sorted(set(plan.units) - set(units.values()) - _structural_units(plan))
    if workload.model is None and unknown:
        raise PlanError(f"plan names weights the model does not have: {unknown[:5]}")
    weights = {init: WeightPlan(plan.get(unit, QUANT, "float"), float(plan.get(unit, SPARSITY, 0.0)),
                                int(plan.get(unit, CLUSTERS, 0))) for init, unit in units.items()}
    calibration = plan.get(WHOLE_MODEL, CALIBRATION, NO_CALIBRATION)
    _check_weight_plans(weights, calibration)
    proto = compress_weights(proto, weights, calibration, workload.calibration)
    artifact = write_artifact(compact_graph(proto), out_path)
    timings["export"] = time.perf_counter() - start - timings["apply"]
    return artifact


def _exported(model: nn.Module, workload) -> tuple[onnx.ModelProto, dict[str, str]]:
    from ..backends.onnx_export import export_onnx

    proto = to_opset(export_onnx(model, workload))
    return proto, match_initializers(proto, model)


EXPORT_CACHE_ENTRIES = 2
_EXPORTS: "weakref.WeakKeyDictionary[nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()


def _torch_stage_onnx(plan: Plan, workload, timings: dict) -> tuple[onnx.ModelProto, dict]:
    """The float ONNX graph of the plan's torch stage and its initializer -> unit map.

    The torch stage is deterministic and depends only on the plan's structural knobs (and
    the training fidelity), so its export is remembered per teacher model: the many plans
    of a search that differ only in weight storage skip the torch stage, the export and the
    opset conversion (about 2 s each on MiniLM). A copy is returned, as quantization
    rewrites the graph in place."""
    from . import fidelity

    _check_units(plan, workload.model)
    stage = {u: {k: v for k, v in knobs.items() if k not in (*WEIGHT_KNOBS, CALIBRATION)}
             for u, knobs in plan.units.items()}
    key = (Plan({u: k for u, k in stage.items() if k}).digest(), fidelity.scale())
    cache = _EXPORTS.setdefault(workload.model, OrderedDict())
    start = time.perf_counter()
    if key in cache:
        cache.move_to_end(key)
        timings["apply"] = 0.0
    else:
        model = compress_torch(plan, workload)
        timings["apply"] = time.perf_counter() - start
        cache[key] = _exported(model, workload)
        while len(cache) > EXPORT_CACHE_ENTRIES:
            cache.popitem(last=False)
    proto, units = cache[key]
    copy_ = onnx.ModelProto()
    copy_.CopyFrom(proto)
    return copy_, dict(units)


def _check_units(plan: Plan, model: nn.Module) -> None:
    unknown = sorted(set(plan.units) - {name for name, _ in model.named_modules()})
    if unknown:
        raise PlanError(f"plan names units the model does not have: {unknown[:5]}")


def _check_weight_plans(weights: dict, calibration: str) -> None:
    from .weights.calibration import CALIBRATION_METHODS

    if calibration not in (NO_CALIBRATION, *CALIBRATION_METHODS):
        raise PlanError(f"unknown calibration {calibration!r}; choose from "
                        f"{', '.join((NO_CALIBRATION, *CALIBRATION_METHODS))}")
    for name, w in sorted(weights.items()):
        if w.quant not in QUANT_BITS or not 0 <= w.sparsity < 1 or w.clusters < 0:
            raise PlanError(f"weight {name}: invalid settings quant={w.quant!r} "
                            f"sparsity={w.sparsity} clusters={w.clusters} "
                            f"(quant is one of {', '.join(QUANT_BITS)})")


def _structural_units(plan: Plan) -> set[str]:
    return {u for u, knobs in plan.units.items() if not set(knobs) & set(WEIGHT_KNOBS)}


def compress_torch(plan: Plan, workload) -> nn.Module:
    """The structural part of a plan: a physically smaller torch model, built by the
    registry's torch-stage steps in order (compression/registry.py)."""
    model = copy.deepcopy(workload.model).eval()
    args = [torch.from_numpy(workload.example[n]) for n in workload.input_names]
    _check_units(plan, model)
    plan = precedence.resolve(plan)   # conflicting knobs: structural/precedence.py
    stage = TorchStage(model, plan, workload, args)
    for _, step in registry.torch_steps():
        step(stage)
    return stage.model.eval()


def fold_batchnorm_step(stage: TorchStage) -> None:
    stage.model = fold_batchnorm(stage.model)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold eval-mode BatchNorm into the preceding conv, so exported weights match torch's."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model)
    except Exception:   # untraceable model: the exporter folds BN itself; those convs stay float
        return model


def count_params(proto: onnx.ModelProto) -> int:
    """Elements stored in the model's initializers (weights, biases, scales)."""
    total = 0
    for init in proto.graph.initializer:
        total += int(np.prod(init.dims)) if init.dims else 1
    return total


def write_artifact(proto: onnx.ModelProto, out_path: Path) -> Artifact:
    """Serialize deterministically and write atomically: no half-written artifact is ever visible."""
    data = proto.SerializeToString(deterministic=True)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, out_path)
    return Artifact(out_path, out_path.stat().st_size, count_params(proto),
                    hashlib.sha256(data).hexdigest())
