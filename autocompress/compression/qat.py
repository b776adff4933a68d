"""Quantization-aware training (QAT): a short distillation fine-tune under fake quantization.

For one plan: the torch stage (pruning, low-rank...) runs as usual, then every weight the
plan quantizes is fake-quantized with exactly the numbers the artifact will hold
(:mod:`.fake_quant`, straight-through estimator), and the model is fine-tuned to match the
uncompressed teacher's outputs on the calibration batches (loss and data of :mod:`.distill`:
KL on softened logits, squared error + (1 - cosine) on embeddings). The trained float
weights then go through the normal export + quantization path, so a QAT artifact has
exactly the format of a PTQ one.
Deterministic: :func:`.distill.deterministic` (seed, deterministic kernels, one thread),
fixed batch order. Embedding tables stay frozen, as in distillation.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from . import distill
from .apply import Artifact, apply_plan, compress_torch, match_initializers
from .fake_quant import FakeQuant, find_targets, weight_plans
from .plan import Plan
from .quantize import to_opset


LEARNING_RATE = {"logits": 3e-4, "embedding": 5e-5}
"""Adam learning rates (cosine-decayed): lower than distillation's, the model is only nudged."""


@dataclass(frozen=True)
class QATConfig:
    """Fine-tuning budget: ``steps`` Adam steps (cosine-decayed ``lr``) over the calibration
    batches, in order."""

    steps: int = 60
    lr: float | None = None      # None: LEARNING_RATE for the workload's output kind
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def finetune(plan: Plan, workload, config: QATConfig = QATConfig(),
             report: dict | None = None) -> nn.Module:
    """The plan's compressed torch model, fine-tuned under the plan's fake quantization."""
    from ..backends.onnx_export import export_onnx

    if workload.model is None:
        raise ValueError("QAT needs a torch model; ONNX-file workloads have no weights to train")
    student = compress_torch(plan, workload)
    proto = to_opset(export_onnx(student, workload))
    weights, calibration = weight_plans(plan, match_initializers(proto, student))
    fake = FakeQuant(student, find_targets(student, proto, weights, calibration))
    report = {} if report is None else report
    report.update(quantized_weights=len(fake.targets), via_oracle=list(fake.via_oracle), losses=[])
    if not fake.targets or config.steps <= 0:
        return fake.remove().eval()
    batches = distill.small_batches(workload)
    teacher = distill.teacher_outputs(workload, batches)
    kind = distill.output_kind(workload)
    frozen = {id(p): p for m in student.modules() if isinstance(m, nn.Embedding)
              for p in m.parameters()}
    for p in frozen.values():
        p.requires_grad_(False)
    params = [p for p in student.parameters() if id(p) not in frozen and p.dtype.is_floating_point]
    with distill.deterministic(), torch.enable_grad():
        torch.manual_seed(config.seed)
        optimizer = torch.optim.Adam(params, lr=config.lr or LEARNING_RATE.get(kind, 5e-5))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
        student.eval()      # BatchNorm folded or frozen; no dropout in play
        for step in range(config.steps):
            i = step % len(batches)
            loss = distill.loss(kind, distill._first(student(*batches[i])), teacher[i])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            report["losses"].append(loss.item())
    for p in params:
        p.grad = None
    for p in frozen.values():
        p.requires_grad_(True)
    return fake.remove().eval()


def apply_qat(plan: Plan, workload, out_path: Path, config: QATConfig = QATConfig(),
              timings: dict | None = None, report: dict | None = None) -> Artifact:
    """Fine-tune (QAT) then export and quantize through the normal path."""
    timings = {} if timings is None else timings
    start = time.perf_counter()
    model = finetune(plan, workload, config, report)
    timings["qat"] = time.perf_counter() - start
    return apply_plan(plan, workload, out_path, timings, model=model)
