"""The technique registry: every compression technique, its knobs and how it is applied.

One :class:`Technique` line per technique; every list the rest of the package needs (which
knobs are weight-storage knobs, which train, which shrink, report titles, the "as is"
values, the techniques table, the torch stage's order) is derived from here. Callables
are named as ``"module:function"`` (``.structural.pruning:prune_knobs``: relative to
compression/) and imported when first used, so this module sits at the bottom and imports
no technique.

Adding a torch-stage technique: one module with a knob-offering function
``(model, example_args, input_names) -> (knobs, skips)`` (``pruning.prune_knobs``,
``depth.drop_knobs``, ...) and ``apply(stage: TorchStage)``, one :class:`Technique` line in
:data:`TECHNIQUES`, and its name in :data:`TORCH_STAGE` where it must run (see
ARCHITECTURE.md; ``tests/test_registry.py`` adds one this way).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from . import plan as P

TORCH = "torch"            # changes the torch model before export
WEIGHTS = "weights"        # changes how the exported ONNX file stores a weight
EXPORT = "export"          # changes the exported graph's shape (early-exit If graph)
AFTER_SEARCH = "after search"   # runs on the front's finalists (QAT, finalize)


@dataclass(frozen=True)
class KnobSpec:
    """What a knob is, independent of any model (a model's :class:`~.records.Knob` says
    which unit offers which choices)."""

    name: str
    identity: object
    """The value that leaves the model as is: every offered knob's ``choices[0]``
    (None: depends on the model, e.g. an early exit's default threshold)."""
    title: str                  # report panel title
    stage: str
    whole_model: bool = False   # one value per model, not per unit
    shrinks: bool = True        # a non-identity choice makes the artifact smaller
    trains: bool = False        # a non-identity choice trains or calibrates (fidelity scales it)
    probe: str | None = None    # how sensitivity measures one choice alone: TORCH, WEIGHTS or not


@dataclass(frozen=True)
class Technique:
    """One row of the techniques table, and the callables that offer and apply it."""

    name: str
    applies_to: str
    knobs: tuple[KnobSpec, ...]
    choices: str                # the knobs' choices as the plan spells them
    module: str                 # where it is implemented
    labels: tuple[str, ...] = ()
    """``Knob.technique`` / ``Skip.technique`` labels that belong to this row."""
    offer: str | None = None
    """``"module:function"``: (model, example_args, input_names) -> (knobs, skips) for a
    torch model (None: offered by another row's function, or not a search knob)."""
    apply: str | None = None
    """``"module:function"``: (stage: TorchStage) -> None, its step of the torch stage."""


@dataclass(frozen=True)
class Step:
    """A torch-stage step that is not a technique of its own."""

    name: str
    apply: str


def _knob(name, identity, title, stage=TORCH, **flags) -> KnobSpec:
    return KnobSpec(name, identity, title, stage, **flags)


PRUNE = _knob(P.PRUNE_RATIO, 0.0, "pruning ratio", probe=TORCH)
VOCAB = _knob(P.VOCAB, "full", "vocabulary", probe=TORCH)
RANK = _knob(P.RANK_RATIO, 1.0, "kept rank", probe=TORCH)
QUANT = _knob(P.QUANT, "float", "weight bits (a8: int8 activations)", WEIGHTS, probe=WEIGHTS)
SPARSITY = _knob(P.SPARSITY, 0.0, "sparsity", WEIGHTS, probe=WEIGHTS)
CLUSTERS = _knob(P.CLUSTERS, 0, "weight clusters", WEIGHTS, probe=WEIGHTS)
CALIBRATION = _knob(P.CALIBRATION, "none", "int8 calibration", WEIGHTS, whole_model=True,
                    shrinks=False, trains=True)
DROP = _knob(P.DROP, False, "block dropped", probe=TORCH)
SHARE = _knob(P.SHARE, False, "weights shared", probe=TORCH)
DECOMP = _knob(P.DECOMP, "none", "conv decomposition", probe=TORCH)
REPLACE = _knob(P.REPLACE, "none", "layer replacement", trains=True)
DISTILL = _knob(P.DISTILL_STEPS, 0, "distillation steps", whole_model=True, shrinks=False,
                trains=True)
EXIT_AFTER = _knob(P.EXIT_AFTER, "none", "early exit after", EXPORT, shrinks=False, trains=True)
EXIT_THRESHOLD = _knob(P.EXIT_THRESHOLD, None, "early-exit threshold", EXPORT, shrinks=False)

TECHNIQUES: tuple[Technique, ...] = (
    Technique("structured pruning", "attention heads, FFN neurons, CNN/MLP channel groups "
              "(Torch-Pruning dependency graph)", (PRUNE,), f"{P.PRUNE_RATIO}: 0 | .25 | .5 | .75",
              "compression/structural/pruning.py", ("structured pruning",),
              ".structural.pruning:prune_knobs", ".structural.pruning:apply"),
    Technique("vocabulary pruning", "Embedding fed by a model input (token ids)", (VOCAB,),
              f"{P.VOCAB}: full | corpus (rows the calibration corpus uses)",
              "compression/structural/vocab.py", ("vocabulary pruning",),
              ".structural.vocab:vocab_knobs", ".structural.vocab:apply"),
    Technique("low-rank factorization", "Linear, Conv (groups=1), large Embedding", (RANK,),
              f"{P.RANK_RATIO}: 1 | .5 | .25 | .125 (| .0625 embeddings), only ranks that save",
              "compression/structural/lowrank.py", ("low-rank factorization",),
              ".structural.lowrank:rank_knobs",
              ".structural.lowrank:apply"),
    Technique("post-training quantization", "Linear, Conv, Embedding", (QUANT, CALIBRATION),
              f"{P.QUANT}: float | w16 | w8 | w4 | w3 | w2 | w8a8 | w8a8c | w8a8cf (MatMul); "
              f"{P.CALIBRATION} (model): none | minmax | percentile | entropy",
              "compression/weights/storage.py, quantize.py, calibration.py",
              ("quantization", "2/3-bit quantization", "static int8 activations",
               "int8 kernels"), ".weights.knobs:torch_weight_knobs"),
    Technique("unstructured pruning", "Linear, Conv (>= 1024 weights, not grouped)", (SPARSITY,),
              f"{P.SPARSITY}: 0 | .5 | .75 | .9 (magnitude; stored values + 1-bit mask)",
              "compression/weights/sparsity.py, packing.py", ("sparsity", "magnitude sparsity")),
    Technique("weight clustering", "Linear, Conv, Embedding (>= 16 x k weights)", (CLUSTERS,),
              f"{P.CLUSTERS}: 0 | 64 | 16 (k-means palette + packed indices)",
              "compression/weights/clustering.py, packing.py", ("weight clustering", "clustering")),
    Technique("depth pruning", "shape-preserving blocks (transformer layers, residual blocks)",
              (DROP,), f"{P.DROP}: false | true", "compression/structural/depth.py",
              ("depth pruning",), ".structural.depth:drop_knobs", ".structural.depth:apply"),
    Technique("cross-layer sharing", "block N reusing block N-1's weights (same structure)",
              (SHARE,), f"{P.SHARE}: false | true", "compression/structural/sharing.py",
              ("parameter sharing", "cross-layer sharing"),
              ".structural.sharing:share_knobs", ".structural.sharing:apply"),
    Technique("tensor decomposition", "full k x k convs (TensorLy)", (DECOMP,),
              f"{P.DECOMP}: none | tucker:0.5 | tucker:0.25 | cp:0.5 | cp:0.25",
              "compression/structural/decompose.py", ("tensor decomposition",),
              ".structural.decompose:decomp_knobs",
              ".structural.decompose:apply"),
    Technique("module replacing", "FFN blocks -> narrower FFN; k x k conv -> depthwise-separable",
              (REPLACE,), f"{P.REPLACE}: none | ffn:0.5 | ffn:0.25 | dwsep (trained by local "
              "distillation)", "compression/structural/replace.py", ("module replacing",),
              ".structural.replace:replace_knobs",
              ".structural.replace:apply"),
    Technique("knowledge distillation", "the whole model, after any compression", (DISTILL,),
              f"{P.DISTILL_STEPS} (model): 0 | 50 | 200; teacher = uncompressed model",
              "compression/training/distill.py", ("knowledge distillation", "distillation"),
              ".training.distill:distill_knobs", ".training.distill:apply"),
    Technique("early exit", "block containers of transformers and CNNs",
              (EXIT_AFTER, EXIT_THRESHOLD), f"{P.EXIT_AFTER} (model): none | <container>.<k>; "
              f"{P.EXIT_THRESHOLD}", "compression/early_exit.py, cost_models/exit_runtime.py",
              ("early exit",), ".early_exit:exit_knobs"),
    Technique("quantization-aware training", "the front's finalists (after the search)", (),
              "SearchConfig.qat_steps (fake quantization mirroring the artifact's storage)",
              "compression/qat.py, weights/fake_quant.py"),
)
"""In the order their knobs are offered (and the techniques table lists them)."""

STEPS = (Step("batchnorm folding", ".apply:fold_batchnorm_step"),)

TORCH_STAGE: tuple[str, ...] = (
    "vocabulary pruning", "structured pruning", "depth pruning", "cross-layer sharing",
    "batchnorm folding", "low-rank factorization", "tensor decomposition", "module replacing",
    "knowledge distillation")
"""The torch stage's order (compression/structural/precedence.py explains why; distillation
is last, as recovery after every structural change)."""


def knob_specs() -> dict[str, KnobSpec]:
    """Every registered knob by name."""
    return {k.name: k for t in TECHNIQUES for k in t.knobs}


def spec(name: str) -> KnobSpec:
    return knob_specs()[name]


def names(**flags) -> tuple[str, ...]:
    """Registered knob names whose fields equal ``flags`` (e.g. ``stage=WEIGHTS``)."""
    return tuple(k.name for k in knob_specs().values()
                 if all(getattr(k, f) == v for f, v in flags.items()))


WEIGHT_KNOBS = names(stage=WEIGHTS, whole_model=False)
"""Knobs that change how one weight is stored in the ONNX file, not the torch model."""


def identity(name: str):
    """The "leave as is" value of a knob (None where it depends on the model)."""
    specs = knob_specs()
    return specs[name].identity if name in specs else None


def titles() -> dict[str, str]:
    return {k.name: k.title for k in knob_specs().values()}


def trains(plan) -> bool:
    """Whether a plan's build has a training or calibration budget to scale."""
    specs = knob_specs()
    return any(name in specs and specs[name].trains and value != specs[name].identity
               for knobs in plan.units.values() for name, value in knobs.items())


def technique_of(label: str) -> str:
    """The table row a Knob/Skip ``technique`` label belongs to (labels carry details in
    parentheses, e.g. "structured pruning (attention heads)")."""
    base = label.split(" (")[0].strip().lower()
    for technique in TECHNIQUES:
        if base == technique.name or base in technique.labels:
            return technique.name
    return base


def resolve(ref: str) -> Callable:
    """The callable a ``"module:function"`` reference names (``.structural.pruning``:
    relative to compression/; ``tests.example_technique``: a full dotted path)."""
    module, _, function = ref.partition(":")
    return getattr(importlib.import_module(module, __package__), function)


def offers() -> list[Callable]:
    """The knob-offering functions of torch models, in offering order."""
    return [resolve(t.offer) for t in TECHNIQUES if t.offer]


def torch_steps() -> list[tuple[str, Callable]]:
    """(name, apply) of each torch-stage step, in :data:`TORCH_STAGE` order."""
    refs = {t.name: t.apply for t in TECHNIQUES if t.apply} | {s.name: s.apply for s in STEPS}
    missing = [t.name for t in TECHNIQUES if t.apply and t.name not in TORCH_STAGE]
    if missing:
        raise ValueError(f"techniques with a torch step missing from TORCH_STAGE: {missing}")
    return [(name, resolve(refs[name])) for name in TORCH_STAGE]
