"""The technique table: every compression technique, where it applies, and its knobs.

`autocompress techniques` prints it; with a model it also lists the knobs that model offers
per technique and, for each layer a technique cannot handle, the reason it is skipped.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import plan as P


@dataclass(frozen=True)
class Technique:
    name: str
    applies_to: str
    knobs: str          # knob name(s) and choices, as the plan spells them
    module: str         # where it is implemented
    technique_labels: tuple   # Knob.technique values that belong to it


TECHNIQUES = (
    Technique("unstructured pruning", "Linear, Conv (>= 1024 weights, not grouped)",
              f"{P.SPARSITY}: 0 | .5 | .75 | .9 (magnitude; stored values + 1-bit mask)",
              "compression/sparsity.py, packing.py", ("sparsity", "magnitude sparsity")),
    Technique("structured pruning", "attention heads, FFN neurons, CNN/MLP channel groups "
              "(Torch-Pruning dependency graph)", f"{P.PRUNE_RATIO}: 0 | .25 | .5 | .75",
              "compression/pruning.py", ("structured pruning",)),
    Technique("depth pruning", "shape-preserving blocks (transformer layers, residual blocks)",
              f"{P.DROP}: false | true", "compression/depth.py", ("depth pruning",)),
    Technique("post-training quantization", "Linear, Conv, Embedding",
              f"{P.QUANT}: float | w16 | w8 | w4 | w3 | w2 | w8a8 | w8a8c | w8a8cf (MatMul); {P.CALIBRATION} (model): "
              "none | minmax | percentile | entropy", "compression/weight_storage.py, quantize.py, "
              "calibration.py", ("quantization", "2/3-bit quantization", "static int8 activations")),
    Technique("quantization-aware training", "the front's finalists (after the search)",
              "SearchConfig.qat_steps (fake quantization mirroring the artifact's storage)",
              "compression/qat.py, fake_quant.py", ()),
    Technique("knowledge distillation", "the whole model, after any compression",
              f"{P.DISTILL_STEPS} (model): 0 | 50 | 200; teacher = uncompressed model",
              "compression/distill.py", ("knowledge distillation", "distillation")),
    Technique("low-rank factorization", "Linear, Conv (groups=1), large Embedding",
              f"{P.RANK_RATIO}: 1 | .5 | .25 | .125 (| .0625 embeddings), only ranks that save",
              "compression/lowrank.py", ("low-rank factorization",)),
    Technique("tensor decomposition", "full k x k convs (TensorLy)",
              f"{P.DECOMP}: none | tucker:0.5 | tucker:0.25 | cp:0.5 | cp:0.25",
              "compression/decompose.py", ("tensor decomposition",)),
    Technique("weight clustering", "Linear, Conv, Embedding (>= 16 x k weights)",
              f"{P.CLUSTERS}: 0 | 64 | 16 (k-means palette + packed indices)",
              "compression/clustering.py, packing.py", ("weight clustering", "clustering")),
    Technique("cross-layer sharing", "block N reusing block N-1's weights (same structure)",
              f"{P.SHARE}: false | true", "compression/sharing.py", ("parameter sharing",
                                                                       "cross-layer sharing")),
    Technique("module replacing", "FFN blocks -> narrower FFN; k x k conv -> depthwise-separable",
              f"{P.REPLACE}: none | ffn:0.5 | ffn:0.25 | dwsep (trained by local distillation)",
              "compression/replace.py", ("module replacing",)),
    Technique("early exit", "block containers of transformers and CNNs",
              f"{P.EXIT_AFTER} (model): none | <container>.<k>; {P.EXIT_THRESHOLD}",
              "compression/early_exit.py, exit_runtime.py", ("early exit",)),
    Technique("vocabulary pruning", "Embedding fed by a model input (token ids)",
              f"{P.VOCAB}: full | corpus (rows the calibration corpus uses)",
              "compression/vocab.py", ("vocabulary pruning",)),
)


def technique_of(label: str) -> str:
    """The table row a Knob/Skip ``technique`` label belongs to (labels carry details in
    parentheses, e.g. "structured pruning (attention heads)")."""
    base = label.split(" (")[0].strip().lower()
    for technique in TECHNIQUES:
        if base == technique.name or base in technique.technique_labels:
            return technique.name
    return base
