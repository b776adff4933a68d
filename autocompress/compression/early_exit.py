"""Early exit: one ONNX model that returns an exit head's answer when it is confident.

Where: after block ``k`` of the model's block container (the ``nn.Sequential`` /
``nn.ModuleList`` of repeated blocks: ``blocks`` in digits-cnn, ``layers`` in MiniLM), found
by tracing the (compressed) model with torch.fx and cutting its graph right after the last
node of block ``k``. Every value live across the cut is handed to the rest of the network.

The artifact: prefix (blocks 0..k) + exit head run first; an ``If`` node then either returns
the exit head's output (then-branch) or runs the rest of the network (else-branch), so ONNX
Runtime really skips the rest. Both segments are exported and quantized the normal way
(the plan's quant choices apply to their layers; the exit heads stay float). A second output,
``exit_taken``, says which branch ran; the threshold is an overridable initializer
(``exit_threshold``), so the runtime can force either path (how :mod:`..cost_models.exit_runtime` times
each path and measures the exit rate).

Criterion (per batch: every row must pass, so at batch 1 it is per input):
- classifiers: max softmax probability of the exit head >= threshold;
- normalised embedding models: exit heads after blocks ``k-1`` and ``k`` give pooled, L2
  normalised embeddings; exit when their cosine >= threshold (the embedding has stopped moving).
Heads are trained by distillation from the model's own final output on calibration batches
(KL for logits, MSE + cosine for embeddings), a fixed number of Adam steps, seeded.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import torch
import torch.fx as fx
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from .training import distill
from . import fidelity
from .plan import EXIT_AFTER, EXIT_THRESHOLD, Plan
from .weights.quantize import to_opset

CONFIDENCE_THRESHOLDS = (0.9, 0.8, 0.95, 0.99)
"""Classifier thresholds on the max softmax probability; the first is the default."""
AGREEMENT_THRESHOLDS = (0.95, 0.93, 0.97, 0.99)
"""Embedding thresholds on the cosine between consecutive exits; the first is the default."""
NO_EXIT = "none"
HEAD_STEPS = 300
HEAD_LR = 1e-2
EXIT_TAKEN = "exit_taken"
THRESHOLD_NAME = "exit_threshold"


class EarlyExitError(ValueError):
    """A model or plan early exit cannot serve (no block container, cut not clean...)."""


# --------------------------------------------------------------------------- where to cut


def block_container(model: nn.Module) -> str | None:
    """The largest Sequential/ModuleList of >= 3 same-class, non-leaf blocks (``blocks``...)."""
    best = None
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Sequential, nn.ModuleList)) or len(module) < 3:
            continue
        kinds = {type(child) for child in module}
        if len(kinds) == 1 and all(any(True for _ in child.children()) for child in module):
            if best is None or len(module) > len(model.get_submodule(best)):
                best = name
    return best


@dataclass(frozen=True)
class Cut:
    position: int                 # index (in graph order) of the block's last node
    crossing: tuple[str, ...]     # values computed before the cut and used after it
    inputs_after: tuple[str, ...]  # model inputs used after the cut
    main: str                     # the block's output: what the exit head reads


def trace(model: nn.Module) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule):
        return model
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:   # data-dependent control flow and the like
        raise EarlyExitError(f"early exit needs a torch.fx-traceable model: {exc}") from exc


def _block_of(node: fx.Node, container: str) -> int | None:
    for key, value in (node.meta.get("nn_module_stack") or {}).items():
        qualified = value[0] if isinstance(value, tuple) else key
        if qualified.startswith(container + "."):
            head = qualified[len(container) + 1:].split(".")[0]
            if head.isdigit():
                return int(head)
    if node.op in ("call_module", "get_attr") and str(node.target).startswith(container + "."):
        head = str(node.target)[len(container) + 1:].split(".")[0]
        return int(head) if head.isdigit() else None
    return None


def find_cut(gm: fx.GraphModule, container: str, index: int) -> Cut:
    """The cut right after block ``index``; raises if the block's nodes are not contiguous."""
    nodes = list(gm.graph.nodes)
    blocks = [_block_of(n, container) for n in nodes]
    mine = [i for i, b in enumerate(blocks) if b == index]
    later = [i for i, b in enumerate(blocks) if b is not None and b > index]
    if not mine or not later or min(later) <= max(mine):
        raise EarlyExitError(f"cannot cut after {container}.{index}: its nodes are not followed "
                             f"by the next block's")
    position = max(mine)
    pos = {n: i for i, n in enumerate(nodes)}
    crossing, inputs_after = [], []
    for node in nodes[:position + 1]:
        if node.op == "get_attr" or not any(pos[u] > position for u in node.users):
            continue
        (inputs_after if node.op == "placeholder" else crossing).append(node.name)
    main = nodes[position].name
    if main not in crossing:
        raise EarlyExitError(f"the output of {container}.{index} is not used by the rest")
    return Cut(position, tuple(crossing), tuple(inputs_after), main)


def exit_choices(model: nn.Module) -> tuple[str | None, tuple[str, ...]]:
    """The block container and the blocks an exit may follow (not the first, not the last)."""
    container = block_container(model)
    if container is None:
        return None, ()
    try:
        gm = trace(model)
    except EarlyExitError:
        return container, ()
    n = len(model.get_submodule(container))
    ok = []
    for index in range(1, n - 1):
        try:
            find_cut(gm, container, index)
            ok.append(f"{container}.{index}")
        except EarlyExitError:
            pass
    return container, tuple(ok)


def plan_exit(plan: Plan) -> tuple[str, str, float | None] | None:
    """(container, block, threshold or None for the default) if the plan asks for an exit."""
    for unit, knobs in sorted(plan.units.items()):
        after = knobs.get(EXIT_AFTER, NO_EXIT)
        if after != NO_EXIT:
            threshold = knobs.get(EXIT_THRESHOLD)
            return unit, str(after), None if threshold is None else float(threshold)
    return None


# --------------------------------------------------------------------------- segments


def _segments(gm: fx.GraphModule, cut: Cut, extra: tuple[str, ...] = ()):
    """(prefix, rest) GraphModules: prefix returns the crossing values (+ ``extra``)."""
    nodes = list(gm.graph.nodes)
    by_name = {n.name: n for n in nodes}
    prefix_graph, env = fx.Graph(), {}
    for node in nodes[:cut.position + 1]:
        env[node] = prefix_graph.node_copy(node, lambda n: env[n])
    prefix_graph.output(tuple(env[by_name[n]] for n in cut.crossing + extra))
    rest_graph, env = fx.Graph(), {}
    for i, name in enumerate(cut.crossing):
        env[by_name[name]] = rest_graph.placeholder(f"ee_h{i}")
    for name in cut.inputs_after:
        env[by_name[name]] = rest_graph.placeholder(name)

    def lookup(n: fx.Node):
        if n not in env:            # a parameter/constant read on both sides of the cut
            env[n] = rest_graph.node_copy(n, lookup)
        return env[n]

    for node in nodes[cut.position + 1:]:
        env[node] = rest_graph.node_copy(node, lookup)
    return fx.GraphModule(gm, prefix_graph), fx.GraphModule(gm, rest_graph)


class ExitHead(nn.Module):
    """Pool the block output (spatial mean / masked token mean), then one Linear."""

    def __init__(self, features: int, out_dim: int, normalize: bool):
        super().__init__()
        self.linear = nn.Linear(features, out_dim)
        self.normalize = normalize
        if normalize and features == out_dim:   # embeddings: start from the pooled hidden state
            nn.init.eye_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    @staticmethod
    def pool(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if h.dim() == 4:
            return h.mean(dim=(2, 3))
        if h.dim() == 3:
            if mask is None:
                return h.mean(dim=1)
            w = mask.to(h.dtype).unsqueeze(-1)
            return (h * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9)
        return h.flatten(1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.linear(self.pool(h, mask))
        return F.normalize(y, p=2.0, dim=-1) if self.normalize else y


class _PrefixWithHeads(nn.Module):
    """Prefix segment plus exit head(s): the crossing values, then the exit outputs
    (``[prev, exit]`` with two heads: ``prev`` reads the extra output, block ``k-1``)."""

    def __init__(self, prefix, heads, n_crossing: int, mask_index: int | None):
        super().__init__()
        self.prefix = prefix
        self.heads = nn.ModuleList(heads)
        self.n_crossing = n_crossing
        self.mask_index = mask_index

    def forward(self, *inputs):
        outs = self.prefix(*inputs)
        mask = inputs[self.mask_index] if self.mask_index is not None else None
        crossing, extra = outs[:self.n_crossing], outs[self.n_crossing:]
        exits = [head(h, mask) for head, h in zip(self.heads, (*extra, crossing[-1]))]
        return (*crossing, *exits)


def _train_heads(prefix, model, heads, batches, n_crossing, mask_index, kind, seed=0):
    """Fit each head's Linear to the model's own final output on calibration batches."""
    feats, targets = [[] for _ in heads], []
    with torch.no_grad():
        for args in batches:
            outs = prefix(*args)
            mask = args[mask_index] if mask_index is not None else None
            sources = (*outs[n_crossing:], outs[n_crossing - 1])
            for store, h in zip(feats, sources):
                store.append(ExitHead.pool(h, mask))
            targets.append(model(*args))
    with distill.deterministic(), torch.enable_grad():
        torch.manual_seed(seed)
        for head, pooled in zip(heads, feats):
            optimizer = torch.optim.Adam(head.parameters(), lr=HEAD_LR)
            for step in range(fidelity.steps(HEAD_STEPS)):
                i = step % len(batches)
                y = head.linear(pooled[i])
                y = F.normalize(y, p=2.0, dim=-1) if head.normalize else y
                loss = distill.loss(kind, y, targets[i])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return heads


# --------------------------------------------------------------------------- build


def build(plan: Plan, workload, model: nn.Module, report: dict | None = None) -> onnx.ModelProto:
    """The early-exit artifact of ``plan`` for the plan's compressed torch ``model``.

    ``report`` (if given) receives the torch side: ``prefix`` (prefix + trained heads, whose
    last outputs are the exits), ``kind`` and ``threshold``.
    """
    container, block, threshold = plan_exit(plan)
    index = int(block.rsplit(".", 1)[1])
    gm = trace(model.eval())
    cut = find_cut(gm, container, index)
    args = [torch.from_numpy(workload.example[n]) for n in workload.input_names]
    kind = distill.output_kind(workload)
    if kind == "embedding" and index < 1:
        raise EarlyExitError("an embedding model's exit compares the exits after two "
                             f"consecutive blocks: exit after {container}.1 or later")
    extra = (find_cut(gm, container, index - 1).main,) if kind == "embedding" else ()
    if threshold is None:
        threshold = (AGREEMENT_THRESHOLDS if kind == "embedding" else CONFIDENCE_THRESHOLDS)[0]
    prefix, rest = _segments(gm, cut, extra)
    mask_index = (list(workload.input_names).index("attention_mask")
                  if "attention_mask" in workload.input_names else None)
    batches = [[torch.from_numpy(b[n]) for n in workload.input_names] for b in workload.calibration]
    with torch.no_grad():
        sample = prefix(*args)
        out_dim = model(*args).shape[-1]
    sources = (*sample[len(cut.crossing):], sample[len(cut.crossing) - 1])
    torch.manual_seed(0)
    heads = [ExitHead(ExitHead.pool(h, None).shape[-1], out_dim, kind == "embedding")
             for h in sources]
    heads = _train_heads(prefix, model, heads, batches, len(cut.crossing), mask_index, kind)
    wrapper = _PrefixWithHeads(prefix, heads, len(cut.crossing), mask_index).eval()
    if report is not None:
        report.update(prefix=wrapper, kind=kind, threshold=float(threshold))
    crossing_names = [f"ee_h{i}" for i in range(len(cut.crossing))]
    exit_names = (["ee_prev"] if extra else []) + ["ee_exit"]
    with torch.no_grad():
        outs = wrapper(*args)
    placeholders = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    after_args = [args[placeholders.index(n)] for n in cut.inputs_after]
    after_names = [workload.input_names[placeholders.index(n)] for n in cut.inputs_after]
    axes = _axes(workload, dict(zip(crossing_names + exit_names, outs)))
    head_proto = _export(wrapper, args, list(workload.input_names), crossing_names + exit_names,
                         axes)
    rest_proto = _export(rest, list(outs[:len(cut.crossing)]) + after_args,
                         crossing_names + after_names, [workload.output_names[0]], axes)
    rest_batches = []
    with torch.no_grad():   # static calibration: each segment calibrates on what it reads
        for batch in batches if _calibrated(plan) else ():
            outs_b = wrapper(*batch)[:len(cut.crossing)]
            feeds = {n: v.numpy() for n, v in zip(crossing_names, outs_b)}
            feeds.update({n: batch[placeholders.index(p)].numpy()
                          for n, p in zip(after_names, cut.inputs_after)})
            rest_batches.append(feeds)
    head_proto = _quantized(head_proto, plan, model, workload.calibration)
    rest_proto = _quantized(rest_proto, plan, model, rest_batches)
    return _stitch(head_proto, rest_proto, workload, kind, float(threshold))


def _axes(workload, values: dict) -> dict:
    """Dynamic axes: the workload's own, batch on every crossing value, and any other
    dynamic input axis (e.g. sequence) wherever a dimension has that axis's example size."""
    axes = {k: dict(v) for k, v in (workload.dynamic_axes or {}).items()}
    sizes = {}
    for name, dims in axes.items():
        if name in workload.example:
            for d, label in dims.items():
                if d != 0 and workload.example[name].shape[d] > 1:
                    sizes[workload.example[name].shape[d]] = label
    for name, value in values.items():
        dims = {0: "batch"}
        dims.update({d: sizes[s] for d, s in enumerate(value.shape) if d and s in sizes})
        axes[name] = dims
    return axes


def _export(module, args, input_names, output_names, axes) -> onnx.ModelProto:
    from ..backends.onnx_export import EXPORT_OPSET

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(args), buffer, dynamo=False, opset_version=EXPORT_OPSET,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes={k: v for k, v in axes.items()
                                        if k in input_names or k in output_names},
                          do_constant_folding=True)
    return to_opset(onnx.load_from_string(buffer.getvalue()))


def _calibrated(plan: Plan) -> bool:
    from .weights.fake_quant import weight_plans
    from .weights.storage import NO_CALIBRATION

    return weight_plans(plan, {})[1] != NO_CALIBRATION


def _quantized(proto: onnx.ModelProto, plan: Plan, model: nn.Module, batches) -> onnx.ModelProto:
    """One segment through the normal weight storage path (exit heads match no unit: float)."""
    from .initializers import match_initializers
    from .weights.fake_quant import weight_plans
    from .weights.storage import compress_weights

    weights, calibration = weight_plans(plan, match_initializers(proto, model))
    return compress_weights(proto, weights, calibration, batches)


def _stitch(head: onnx.ModelProto, rest: onnx.ModelProto, workload, kind: str,
            threshold: float) -> onnx.ModelProto:
    """Main graph = prefix + heads + criterion + If(then: exit output, else: the rest)."""
    keep = {i.name for i in rest.graph.input}
    rest_graph = _renamed(rest.graph, "rest/", keep)
    out = workload.output_names[0]
    axes = helper.make_tensor("ee_axes", TensorProto.INT64, [1], [-1])
    if kind == "embedding":
        criterion = [helper.make_node("Mul", ["ee_prev", "ee_exit"], ["ee_prod"], name="ee_prod"),
                     helper.make_node("ReduceSum", ["ee_prod", "ee_axes"], ["ee_conf"],
                                      name="ee_cosine", keepdims=0)]
    else:
        criterion = [helper.make_node("Softmax", ["ee_exit"], ["ee_prob"], name="ee_softmax",
                                      axis=-1),
                     helper.make_node("ReduceMax", ["ee_prob", "ee_axes"], ["ee_conf"],
                                      name="ee_confidence", keepdims=0)]
    criterion += [helper.make_node("ReduceMin", ["ee_conf"], ["ee_min"], name="ee_all_rows",
                                   keepdims=0),
                  helper.make_node("GreaterOrEqual", ["ee_min", THRESHOLD_NAME], [EXIT_TAKEN],
                                   name="ee_decide")]
    then_branch = helper.make_graph(
        [helper.make_node("Identity", ["ee_exit"], ["ee_then_out"], name="ee_then")], "exit", [],
        [helper.make_tensor_value_info("ee_then_out", TensorProto.FLOAT, None)])
    else_branch = helper.make_graph(
        list(rest_graph.node), "rest", [],
        [helper.make_tensor_value_info(o.name, TensorProto.FLOAT, None) for o in rest_graph.output],
        list(rest_graph.initializer))
    branch = helper.make_node("If", [EXIT_TAKEN], [out], name="ee_if",
                              then_branch=then_branch, else_branch=else_branch)
    inputs = list(head.graph.input)
    have = {i.name for i in inputs}
    inputs += [i for i in rest.graph.input if i.name in workload.input_names and i.name not in have]
    threshold_init = numpy_helper.from_array(np.array(threshold, np.float32), THRESHOLD_NAME)
    inputs.append(helper.make_tensor_value_info(THRESHOLD_NAME, TensorProto.FLOAT, []))
    outputs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, None),
               helper.make_tensor_value_info(EXIT_TAKEN, TensorProto.BOOL, [])]
    graph = helper.make_graph(list(head.graph.node) + criterion + [branch], "early_exit", inputs,
                              outputs, list(head.graph.initializer) + [axes, threshold_init])
    opsets = {o.domain: o.version for o in list(head.opset_import) + list(rest.opset_import)}
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v)
                                                    for d, v in sorted(opsets.items())])
    model.ir_version = head.ir_version
    return model


def _renamed(graph: onnx.GraphProto, prefix: str, keep: set[str]) -> onnx.GraphProto:
    """A copy of ``graph`` with every name not in ``keep`` prefixed (no clashes once nested)."""
    graph = onnx.GraphProto.FromString(graph.SerializeToString())

    def new(name: str) -> str:
        return name if not name or name in keep else prefix + name

    for i, node in enumerate(graph.node):
        node.name = prefix + (node.name or f"node{i}")
        node.input[:] = [new(n) for n in node.input]
        node.output[:] = [new(n) for n in node.output]
    for tensor in graph.initializer:
        tensor.name = new(tensor.name)
    for info in list(graph.value_info) + list(graph.output):
        info.name = new(info.name)
    return graph


# --------------------------------------------------------------------------- knobs

TECHNIQUE = "early exit"


def exit_knobs(model: nn.Module, example_args, input_names=()) -> tuple[list, list]:
    """(knobs, skips): where an exit may go and its threshold, or why early exit is not offered."""
    from .records import Knob, Skip

    container, blocks = exit_choices(model)
    if container is None:
        return [], [Skip("", TECHNIQUE, "no block container (an nn.Sequential / nn.ModuleList "
                                        "of >= 3 blocks of one class) to put an exit after")]
    if not blocks:
        return [], [Skip(container, TECHNIQUE, "the traced graph has no clean cut after any "
                                               "of its inner blocks (or torch.fx cannot trace it)")]
    with torch.no_grad():
        out = model(*example_args)
    out = out[0] if isinstance(out, (tuple, list)) else out
    norms = out.float().norm(dim=-1)
    unit_norm = bool(torch.allclose(norms, torch.ones_like(norms), atol=1e-3))
    thresholds = AGREEMENT_THRESHOLDS if unit_norm else CONFIDENCE_THRESHOLDS
    return [Knob(container, EXIT_AFTER, (NO_EXIT, *blocks), TECHNIQUE),
            Knob(container, EXIT_THRESHOLD, thresholds, TECHNIQUE)], []
