"""Per-layer sensitivity: what each knob choice alone costs in quality, measured once per model.

Each (knob, choice) is applied alone to the uncompressed model and the workload's own quality
score is measured on its evaluation set (a perturbation analysis; no Hessian approximation):

- structural knobs (pruning, low rank, dropping, sharing, conv decomposition): the torch stage
  of :mod:`compression.apply` on the one-knob plan, then a torch forward pass (no export);
- weight knobs (``quant``, ``sparsity``, ``clusters``): the layer's weight replaced by exactly
  what the artifact would store (:mod:`compression.fake_quant`, the QAT machinery), ``w8a8``
  with ONNX Runtime's dynamic activation quantization simulated.

Each weight format is also applied to every weight that offers it and the whole model timed
on ONNX Runtime against float (round-robin, so drift hits all alike): whether a format is
faster, as fast or slower here decides which seeds may use it.

Knobs that train (``replace``, ``distill_steps``) and whole-model knobs (``calibration``,
``vocab``, early exit) are not measured: the search treats them as before. An ONNX file's
weights are measured as its units. The result (seconds to a few minutes) is cached per model in
``cache_dir()/sensitivity/``; :mod:`search.seeding` turns it into seed plans and prunes
catastrophic choices from the search space.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from .compression.knobs import Knob
from .compression import registry
from .compression.plan import CLUSTERS, QUANT, QUANT_BITS, SPARSITY, Plan
from .paths import cache_dir

METHOD = "one knob at a time on the uncompressed model; workload score on its evaluation set"
VERSION = 7
FORMAT_ROUNDS = 5
"""Round-robin timing rounds of the weight-format latency probe (ratios taken per round)."""


@dataclass
class Sensitivity:
    """Quality drop of every measured (knob, choice); a knob or choice absent was not measured."""

    base_quality: float
    drops: dict[str, dict[str, float]] = field(default_factory=dict)   # knob key -> choice -> drop
    saved: dict[str, dict[str, float]] = field(default_factory=dict)   # ... -> bytes saved (est.)
    format_latency: dict[str, float] = field(default_factory=dict)     # "quant:w8a8" -> t/t_float
    seconds: float = 0.0
    space: str = ""          # digest of the knobs measured (a changed space is measured again)
    method: str = METHOD
    version: int = VERSION

    def drop(self, knob: Knob, choice) -> float | None:
        if choice == knob.choices[0]:
            return 0.0
        return self.drops.get(knob.key, {}).get(choice_key(choice))

    def saved_bytes(self, knob: Knob, choice) -> float | None:
        if choice == knob.choices[0]:
            return 0.0
        return self.saved.get(knob.key, {}).get(choice_key(choice))

    def latency_ratio(self, knob: Knob, choice) -> float | None:
        """Host latency of the whole model with every weight in this format, over float's
        (None: not measured). A format rebuilt to float when the session loads (packed
        codes, palettes, sparse stores) runs at float speed; a dequantizing or int8 kernel
        may be faster or slower, depending on the layer types and the CPU."""
        return self.format_latency.get(format_key(knob.name, choice))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Sensitivity":
        return cls(**data)


def choice_key(choice) -> str:
    return json.dumps(choice)


def format_key(name: str, choice) -> str:
    return f"{name}:{choice_key(choice)}"


def space_digest(knobs: Sequence[Knob]) -> str:
    import hashlib

    text = json.dumps(sorted([k.key, [choice_key(c) for c in k.choices]] for k in knobs))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def measurable(knob: Knob) -> bool:
    return probe(knob) is not None


def probe(knob: Knob) -> str | None:
    """How a choice is measured alone (the registry's ``probe``): ``registry.TORCH`` through
    the torch stage (pruning, low rank, dropping, sharing, conv decomposition, vocabulary),
    ``registry.WEIGHTS`` as the stored weight format, None not at all."""
    spec = registry.knob_specs().get(knob.name)
    return spec.probe if spec else None


def analyse(workload, knobs: Sequence[Knob], use_cache: bool = True,
            progress=None) -> Sensitivity | None:
    """Sensitivity of every measurable knob (torch workloads and ONNX files alike)."""
    from .pipeline import workload_key

    wanted = [k for k in knobs if measurable(k)]
    path = cache_dir() / "sensitivity" / f"{workload_key(workload)}.json"
    if use_cache and path.is_file():
        cached = Sensitivity.from_dict(json.loads(path.read_text()))
        if cached.version == VERSION and cached.space == space_digest(wanted):
            return cached
    result = _measure(workload, wanted, progress)
    result.space = space_digest(wanted)
    from .files import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result.to_dict())
    return result


NEGLIGIBLE = 1e-4
"""A drop at most this fraction of the baseline quality counts as free: the gentler choices
of the same knob are not measured but bounded by it (drops grow with harshness)."""

QUANT_CHAIN = ("w2", "w3", "w4", "w8", "w16")


def harshest_first(knob: Knob) -> list[list]:
    """The knob's choices as chains from harshest to gentlest (each chain's drops shrink).
    ``w8a8`` (activations quantized too) is its own chain."""
    rest = list(knob.choices[1:])
    if knob.name == QUANT:
        chain = [c for c in QUANT_CHAIN if c in rest]
        return [chain] + [[c] for c in rest if c not in chain]
    return [rest[::-1]]      # prune, rank, sparsity, clusters, ...: listed gentlest first


def _measure(workload, knobs: Sequence[Knob], progress=None) -> Sensitivity:
    start = time.perf_counter()
    probe = _Probe(workload)
    result = Sensitivity(probe.base_quality)
    for index, knob in enumerate(knobs):
        drops = result.drops.setdefault(knob.key, {})
        saved = result.saved.setdefault(knob.key, {})
        for chain in harshest_first(knob):
            bound = None       # a harsher choice that cost nothing bounds the gentler ones
            for choice in chain:
                if bound is not None:
                    drops[choice_key(choice)] = bound
                    measured = probe.saved_only(knob, choice)
                else:
                    measured = probe.quality(knob, choice)
                    if measured is None:
                        continue
                    drops[choice_key(choice)] = probe.base_quality - measured[0]
                    if drops[choice_key(choice)] <= NEGLIGIBLE * abs(probe.base_quality):
                        bound = max(drops[choice_key(choice)], 0.0)
                if measured is not None:
                    saved[choice_key(choice)] = measured[1]
        if progress is not None:
            progress(index + 1, len(knobs))
    result.format_latency = probe.format_latencies(knobs)
    result.seconds = time.perf_counter() - start
    result.method = f"{METHOD}; quality computed with {probe.engine}"
    return result


class _Probe:
    """Quality of the uncompressed model with one knob changed.

    Two exact routes, the faster one chosen by timing the baseline once: torch forward
    passes (weights replaced by what the artifact stores), or ONNX Runtime on the exported
    graph (the weight stored as the artifact stores it; small conv nets run much faster
    there). When even the faster full pass is slow (MiniLM), quality becomes agreement with the
    uncompressed outputs on the first ``SUBSET_ROWS`` evaluation rows (mean cosine for
    embeddings, top-1 agreement for logits), which is the MiniLM metric itself on fewer rows.
    An ONNX file's input sets are often one row each, so a slow one (a 20 MB detector: 2.3 s
    a pass, 229 knobs) is probed on its first ``SUBSET_SETS`` sets instead, scored as output
    cosine to the uncompressed outputs: top-1 on 8 rows could only say 0, 1/8, 2/8...
    """

    def __init__(self, workload):
        from .backends import ort_runner
        from .backends.onnx_export import export_onnx
        from .compression.apply import compress_torch
        from .compression.initializers import match_initializers
        from .compression.weights.quantize import to_opset

        self.workload = workload
        if workload.model is None:      # an ONNX file: its weights are the units
            import onnx

            from .compression.weights.quantize import weight_initializers

            self.model = None
            self.proto = to_opset(onnx.load(str(workload.onnx_path)))
            matched = {name: name for name in weight_initializers(self.proto)}
        else:
            self.model = compress_torch(Plan(), workload)       # BatchNorm folded, as exported
            self.proto = to_opset(export_onnx(self.model, workload))
            matched = match_initializers(self.proto, self.model)
        self.proto_bytes = self.proto.SerializeToString()   # each probe edits a fresh copy
        self._readers: dict[str, tuple[bytes, int]] = {}   # unit -> its readers' model, bytes
        self.units: dict[str, list[str]] = {}
        self.sizes = {i.name: int(np.prod(i.dims)) for i in self.proto.graph.initializer}
        for init, unit in matched.items():
            self.units.setdefault(unit, []).append(init)
        self.threads = ort_runner.TimingConfig().threads
        self.batches = list(workload.evaluation)
        self.reference = None
        began = time.perf_counter()
        torch_out = self._torch_outputs(self.model) if self.model is not None else None
        torch_s = time.perf_counter() - began if self.model is not None else float("inf")
        began = time.perf_counter()
        onnx_out = self._onnx_outputs(self.proto)
        onnx_s = time.perf_counter() - began
        self.use_onnx = onnx_s < torch_s / 2   # small convolutional models: torch is slow
        self.engine = "ONNX Runtime" if self.use_onnx else "torch"
        base_outputs = onnx_out if self.use_onnx else torch_out
        if min(onnx_s, torch_s) > FULL_PASS_LIMIT_S and self.model is not None:
            self.batches = _first_rows(self.batches, SUBSET_ROWS)
            self.reference = [b[0] for b in base_outputs[:len(self.batches)]]
            self.engine += (f", agreement with the uncompressed outputs on the first "
                            f"{sum(len(next(iter(b.values()))) for b in self.batches)} rows")
        elif self.model is None and onnx_s > FULL_PASS_LIMIT_S and len(self.batches) > SUBSET_SETS:
            self.batches = self.batches[:SUBSET_SETS]
            self.reference = base_outputs[:SUBSET_SETS]
            self.engine += (f", output cosine to the uncompressed outputs on the first "
                            f"{SUBSET_SETS} of {len(base_outputs)} input sets")
        self.base_quality = self._score(base_outputs[:len(self.batches)])

    def quality(self, knob: Knob, choice) -> tuple[float, float] | None:
        """(quality, estimated bytes saved) with only ``knob`` set to ``choice``."""
        if probe(knob) == registry.TORCH:
            model = self._structural(knob, choice)
            if model is None:
                return None
            if self.use_onnx:
                from .backends.onnx_export import export_onnx
                from .compression.weights.quantize import to_opset

                proto = to_opset(export_onnx(model, self.workload))
                return self._score(self._onnx_outputs(proto)), self._saved_by(model)
            return self._score(self._torch_outputs(model)), self._saved_by(model)
        quality = self._weight_quality(knob, choice)
        return None if quality is None else (quality, self._weight_saved(knob, choice))

    def saved_only(self, knob: Knob, choice) -> tuple[None, float] | None:
        """Bytes saved without measuring quality (a bounded choice)."""
        if probe(knob) == registry.TORCH:
            model = self._structural(knob, choice)
            return None if model is None else (None, self._saved_by(model))
        return (None, self._weight_saved(knob, choice)) if self.units.get(knob.unit) else None

    def format_latencies(self, knobs: Sequence[Knob]) -> dict[str, float]:
        """Latency ratio to float of each weight format applied to every weight that offers
        it (ONNX Runtime on this host), timed round-robin so drift hits all alike."""
        import onnx

        from .backends import ort_runner
        from .compression.weights.storage import WeightPlan, compress_weights

        formats: dict[str, dict[str, WeightPlan]] = {}
        for knob in knobs:
            if probe(knob) != registry.WEIGHTS:
                continue
            for choice in knob.choices[1:]:
                plan = _weight_plan(knob, choice)
                weights = formats.setdefault(format_key(knob.name, choice), {})
                weights.update({init: plan for init in self.units.get(knob.unit, [])})
        sessions = {"": ort_runner.make_session(self.proto_bytes, self.threads)}
        for key, weights in formats.items():
            proto = onnx.ModelProto.FromString(self.proto_bytes)
            try:
                data = compress_weights(proto, weights).SerializeToString()
                sessions[key] = ort_runner.make_session(data, self.threads)
            except Exception:   # a format that cannot apply model-wide is simply not timed
                continue
        timing = ort_runner.TimingConfig(warmup=2, repeat=10, threads=self.threads)
        rounds = {key: [] for key in sessions}
        for _ in range(FORMAT_ROUNDS):
            for key, session in sessions.items():
                rounds[key].append(ort_runner.measure_latency(session, self.workload.example,
                                                              timing).median_s)
        return {key: float(np.median(np.array(times) / np.array(rounds[""])))
                for key, times in rounds.items() if key}

    def _structural(self, knob: Knob, choice):
        """The torch stage of the one-knob plan, or None where the choice cannot apply alone."""
        from .compression.apply import compress_torch

        try:
            return compress_torch(Plan({knob.unit: {knob.name: choice}}), self.workload)
        except Exception:   # a choice that cannot apply alone is simply not measured
            return None

    def _saved_by(self, model) -> float:
        return 4.0 * (_n_params(self.model) - _n_params(model))

    def _weight_saved(self, knob: Knob, choice) -> float:
        """Bytes the choice saves, measured on a model of only the nodes that read the
        unit's weights, stored and trimmed as an artifact is: what a format adds per weight
        (scales, zero points, rebuild nodes) is a fifth of a small model's file. The bits
        per weight alone where that model cannot be built."""
        from .compression.compact import compact_graph
        from .compression.weights.storage import compress_weights

        inits = self.units.get(knob.unit, [])
        try:
            import onnx

            if knob.unit not in self._readers:     # once per unit, not per choice
                local = _readers_model(self.proto, inits)
                self._readers[knob.unit] = (
                    local, compact_graph(onnx.ModelProto.FromString(local)).ByteSize())
            local, float_bytes = self._readers[knob.unit]
            stored = compress_weights(onnx.ModelProto.FromString(local),
                                      {i: _weight_plan(knob, choice) for i in inits})
            return float(float_bytes - compact_graph(stored).ByteSize())
        except Exception:   # a weight read only inside a subgraph, a format ORT refuses here
            n = sum(self.sizes[i] for i in inits)
            return n * (32 - _stored_bits(knob.name, choice)) / 8

    def _weight_quality(self, knob: Knob, choice) -> float | None:
        from .compression.weights.storage import compress_weights

        plan = _weight_plan(knob, choice)
        weights = {init: plan for init in self.units.get(knob.unit, [])}
        if not weights:
            return None
        if self.use_onnx:
            import onnx

            proto = onnx.ModelProto.FromString(self.proto_bytes)
            return self._score(self._onnx_outputs(compress_weights(proto, weights)))
        targets = [dataclasses.replace(t, plan=plan) for t in self._targets()
                   if t.init in weights]
        if not targets:
            return None
        with _stored_weights(self.model, targets):
            return self._score(self._torch_outputs(self.model))

    def _targets(self) -> list:
        """Every weight's torch module and layout, matched once (find_targets hashes every
        module's weights, a second per call on MiniLM)."""
        if not hasattr(self, "_all_targets"):
            from .compression.weights.fake_quant import find_targets
            from .compression.weights.storage import WeightPlan

            every = {i: WeightPlan("w8") for inits in self.units.values() for i in inits}
            self._all_targets = find_targets(self.model, self.proto, every)
        return self._all_targets

    def _score(self, outputs) -> float:
        if self.reference is None:
            return float(self.workload.score(outputs).value)
        if self.model is None:
            from .workloads.onnx_metrics import cosine_quality

            return cosine_quality(outputs, self.reference).value
        return _agreement(self.workload.output_kind, [o[0] for o in outputs], self.reference)

    def _torch_outputs(self, model) -> list:
        import torch

        with torch.no_grad():
            return [[t.numpy() for t in _as_list(model(*[torch.from_numpy(b[n])
                                                         for n in self.workload.input_names]))]
                    for b in self.batches]

    def _onnx_outputs(self, proto) -> list:
        from .backends import ort_runner

        session = ort_runner.make_session(proto.SerializeToString(), self.threads)
        return ort_runner.run_batches(session, self.batches)


FULL_PASS_LIMIT_S = 0.5
SUBSET_ROWS = 32
SUBSET_SETS = 8


def _first_rows(batches: list, rows: int) -> list:
    out, seen = [], 0
    for batch in batches:
        if seen >= rows:
            break
        out.append(batch)
        seen += len(next(iter(batch.values())))
    return out


def _agreement(kind: str, outputs: list, reference: list) -> float:
    """Mean cosine (embeddings) or top-1 agreement (logits) with the uncompressed outputs."""
    y = np.concatenate([o.reshape(len(o), -1) for o in outputs]).astype(np.float64)
    r = np.concatenate([o.reshape(len(o), -1) for o in reference]).astype(np.float64)
    if kind == "logits":
        return float(np.mean(y.argmax(1) == r.argmax(1)))
    cos = (y * r).sum(1) / np.maximum(np.linalg.norm(y, axis=1) * np.linalg.norm(r, axis=1), 1e-12)
    return float(np.mean(cos))


@contextlib.contextmanager
def _stored_weights(model, targets):
    """Inside: each target's torch weight holds exactly what the artifact would store (the
    fast mirror of the storage path, or the storage path itself where no mirror exists);
    ``w8a8`` layers also quantize their input as ORT's DynamicQuantizeLinear does."""
    import torch

    from .compression.weights.fake_quant import dynamic_quant_activation, mirror, oracle
    from .compression.weights.storage import DYNAMIC_INT8

    saved, hooks = [], []
    try:
        for t in targets:
            module = model.get_submodule(t.module)
            weight = module.weight.detach()
            onnx_w = weight.t().contiguous() if t.transposed else weight
            deq = mirror(onnx_w, t.kind, t.plan, t.calibration)
            if deq is None:
                deq = torch.from_numpy(oracle(onnx_w.numpy(), t.kind, t.plan, t.calibration,
                                              t.groups))
            saved.append((module, weight.clone()))
            module.weight.data.copy_(deq.t() if t.transposed else deq)
            if t.plan.quant in DYNAMIC_INT8 and t.kind != "gather" and t.plan.clusters == 0:
                hooks.append(module.register_forward_pre_hook(
                    lambda _m, args: (dynamic_quant_activation(args[0]), *args[1:])))
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for module, weight in saved:
            module.weight.data.copy_(weight)


def _weight_plan(knob: Knob, choice):
    """The storage of one weight with only this weight knob changed."""
    from .compression.weights.storage import WeightPlan

    settings = {QUANT: "float", SPARSITY: 0.0, CLUSTERS: 0, knob.name: choice}
    return WeightPlan(settings[QUANT], float(settings[SPARSITY]), int(settings[CLUSTERS]))


def _readers_model(proto, inits: Sequence[str]) -> bytes:
    """A model of the main-graph nodes reading ``inits``, with the initializers they read;
    their other inputs become graph inputs (int64 where a Gather reads indices)."""
    import onnx
    from onnx import TensorProto, helper

    wanted = set(inits)
    nodes = [n for n in proto.graph.node if wanted & set(n.input)]
    if not nodes:
        raise ValueError("read only inside subgraphs")
    stored = {i.name: i for i in proto.graph.initializer}
    read = [name for n in nodes for name in n.input if name]
    indices = {n.input[1] for n in nodes if n.op_type == "Gather"}
    inputs = [helper.make_tensor_value_info(
        name, TensorProto.INT64 if name in indices else TensorProto.FLOAT, None)
        for name in dict.fromkeys(read) if name not in stored]
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
               for n in nodes for o in n.output]
    graph = helper.make_graph(nodes, "readers", inputs, outputs,
                              [stored[name] for name in dict.fromkeys(read) if name in stored])
    model = helper.make_model(graph, opset_imports=list(proto.opset_import))
    return model.SerializeToString()


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _stored_bits(name: str, choice) -> float:
    """Bits per weight an artifact stores for one weight-knob choice (mask included)."""
    if name == QUANT:
        return float(QUANT_BITS[choice][0])
    if name == SPARSITY:
        return min(32.0, (1 - float(choice)) * 32 + 1)
    return math.log2(int(choice))     # clusters: palette index


def _as_list(output) -> list:
    return list(output) if isinstance(output, (tuple, list)) else [output]
