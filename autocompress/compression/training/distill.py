"""Knowledge distillation: the compressed model relearns the uncompressed model's outputs.

Teacher = the workload's uncompressed model, student = the compressed torch model,
data = the workload's training batches (its calibration batches when it has none; never
the evaluation set), cut into small batches taken in a fixed order. This is the short
distillation a trial affords; long runs (QAT, the finalize stage) use :mod:`.recovery`. Loss follows ``Workload.output_kind``: KL divergence of
temperature-softened softmaxes for "logits", squared error plus (1 - cosine) for
"embedding". Runs last, as recovery after every structural change.

Deterministic: seeded, deterministic algorithms on, fixed batch order, so the same plan
gives the same weights and the same artifact bytes. Embedding tables stay frozen (few
of their rows see gradients on a small corpus; Adam state for them would dwarf the rest).
"""
from __future__ import annotations

import contextlib
import hashlib
import weakref
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..records import Knob
from .. import fidelity
from ..plan import DISTILL_STEPS, WHOLE_MODEL

TECHNIQUE = "knowledge distillation"
STEP_CHOICES = (0, 50, 200)
BATCH_ROWS = 16
LEARNING_RATE = {"logits": 1e-3, "embedding": 1e-4}
ADAM_EPS = 1e-5
"""Larger than Adam's 1e-8: a student that already matches its teacher has gradients near
1e-7, which the default eps would blow up to full learning-rate steps (digits-cnn: 50 steps
on the uncompressed model cost 0.9 points of accuracy at eps 1e-8, none at 1e-5)."""
TEMPERATURE = 2.0
SEED = 0
TRAIN_THREADS = 1

_TEACHER_OUTPUTS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def distill_knobs(model: nn.Module, example_args=(), input_names=()) -> tuple[list[Knob], list]:
    """(knobs, skips): the model-wide step count, where the model has weights to train."""
    trainable = any(not isinstance(m, nn.Embedding) and any(True for _ in m.parameters(recurse=False))
                    for m in model.modules())
    return [Knob(WHOLE_MODEL, DISTILL_STEPS, STEP_CHOICES, TECHNIQUE)] if trainable else [], []


def small_batches(workload, limit: int | None = None,
                  source: str = "training") -> list[tuple[torch.Tensor, ...]]:
    """``BATCH_ROWS``-row pieces, in order, of the training batches (calibration when the
    workload has none; ``source="calibration"`` for calibration itself); at most ``limit``
    pieces (a short run needs only its first few of tens of thousands)."""
    out = []
    batches = workload.recovery_batches() if source == "training" else workload.calibration
    for batch in batches:
        args = [torch.from_numpy(batch[name]) for name in workload.input_names]
        for start in range(0, len(args[0]), BATCH_ROWS):
            out.append(tuple(a[start:start + BATCH_ROWS] for a in args))
            if limit is not None and len(out) >= limit:
                return out
    return out


def teacher_outputs(workload, batches: Sequence[tuple]) -> list[torch.Tensor]:
    """The uncompressed model's outputs on ``batches``, computed once per teacher and data."""
    digest = hashlib.sha1()
    for args in batches:
        for a in args:
            digest.update(a.numpy().tobytes() + str(tuple(a.shape)).encode())
    cache = _TEACHER_OUTPUTS.setdefault(workload.model, {})
    key = digest.hexdigest()
    if key not in cache:
        with torch.no_grad(), deterministic():
            cache[key] = [_first(workload.model(*args)).detach() for args in batches]
    return cache[key]


def loss(kind: str, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if kind == "logits":
        t = TEMPERATURE
        return F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1),
                        log_target=True, reduction="batchmean") * t * t
    flat_s, flat_t = student.flatten(1), teacher.flatten(1)
    mse = (flat_s - flat_t).pow(2).sum(1).mean()
    return mse + (1 - F.cosine_similarity(flat_s, flat_t, dim=1)).mean()


def calibration_loss(student: nn.Module, workload) -> float:
    """Mean distillation loss over all calibration batches (how far the student is)."""
    batches = small_batches(workload, source="calibration")
    targets = teacher_outputs(workload, batches)
    kind = output_kind(workload)
    with torch.no_grad(), deterministic():
        values = [float(loss(kind, _first(student(*a)), t)) for a, t in zip(batches, targets)]
    return sum(values) / len(values)


def output_kind(workload) -> str:
    return getattr(workload, "output_kind", "logits")


def distill(student: nn.Module, workload, steps: int) -> list[float]:
    """Train ``student`` toward the workload's model for ``steps`` Adam steps; the loss per step.

    Never makes things worse on the calibration data: if the mean calibration loss did not
    drop (a student that already matches its teacher only drifts), the weights are restored.
    """
    steps = fidelity.steps(steps)
    if steps <= 0:
        return []
    params = _trainable(student)
    if not params:
        return []
    batches = small_batches(workload, limit=steps)
    targets = teacher_outputs(workload, batches)
    kind = output_kind(workload)
    before = calibration_loss(student, workload)
    snapshot = [p.detach().clone() for p in params]
    losses = []
    with deterministic(), torch.enable_grad():
        opt = torch.optim.Adam(params, lr=LEARNING_RATE.get(kind, 1e-4), eps=ADAM_EPS)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        student.eval()   # no dropout, no BatchNorm statistics drift: a pure function being fitted
        for step in range(steps):
            i = step % len(batches)
            value = loss(kind, _first(student(*batches[i])), targets[i])
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            sched.step()
            losses.append(value.item())
    for p in student.parameters():
        p.grad = None
    if calibration_loss(student, workload) >= before:
        with torch.no_grad():
            for p, saved in zip(params, snapshot):
                p.copy_(saved)
    return losses


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    frozen = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    seen, params = set(), []
    for p in model.parameters():
        if id(p) not in frozen and id(p) not in seen and p.dtype.is_floating_point:
            seen.add(id(p))
            p.requires_grad_(True)
            params.append(p)
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            m.weight.requires_grad_(False)
    return params


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def deterministic():
    """Seeded RNG, deterministic kernels and a fixed thread count (reductions split the same
    way on every machine, and small training steps do not stall on a busy host)."""
    return seeded(SEED, TRAIN_THREADS)


@contextlib.contextmanager
def seeded(seed: int = 0, threads: int = 1):
    """Seeded RNG, deterministic kernels and a fixed thread count."""
    was, before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was)
            torch.set_num_threads(before)


def apply(stage) -> None:
    """Last step: recovery toward the uncompressed model after every structural change."""
    distill(stage.model, stage.workload, int(stage.plan.get(WHOLE_MODEL, DISTILL_STEPS, 0)))
