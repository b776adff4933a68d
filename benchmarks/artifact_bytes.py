"""Where an artifact's bytes go: weight codes, per-channel vectors, graph.

Usage: .venv/bin/python benchmarks/artifact_bytes.py [--model digits-cnn] [--times 20]

Builds the uncompressed model and uniform plans at every weight width the model offers
(plus the smallest plan of a 300-trial search, if ``--plan FILE`` names its JSON), and splits
each ONNX file into: weight tensors (codes, palettes, masks: the initializers with more than
one dimension or packed bytes), per-channel vectors (biases, scales, zero points: 1-D float
initializers) and the graph (nodes, names, shapes, everything else in the protobuf). The
"weights allowed" columns say how small the weight tensors would have to be for the whole
file to be ``--times`` smaller than fp32, given the rest (as stored, and if every internal
name were a short id): the arithmetic behind the digits-cnn 20x goal.
Prints a Markdown table; writes results/artifact_bytes.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402
from onnx import TensorProto  # noqa: E402


def split(path: Path) -> dict:
    """Bytes of one ONNX file by part (serialized sizes; they sum to about the file size)."""
    model = onnx.load(str(path))
    weights = vectors = 0
    for init in model.graph.initializer:
        size = len(init.SerializeToString())
        one_d_float = len(init.dims) <= 1 and init.data_type in (
            TensorProto.FLOAT, TensorProto.FLOAT16)
        if one_d_float:
            vectors += size
        else:
            weights += size
    total = path.stat().st_size
    return {"file": total, "weights": weights, "vectors": vectors,
            "graph": total - weights - vectors, "file_short_names": short_names(model)}


def short_names(model: onnx.ModelProto) -> int:
    """Bytes of the same model with node names dropped and every internal tensor renamed to a
    short hex id (what a name-minifying container would save; autocompress does not do this).
    ONNX Runtime must still load it."""
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    keep = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    ids: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return ids.setdefault(name, format(len(ids), "x"))

    for node in model.graph.node:
        node.name, node.doc_string = "", ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    for init in model.graph.initializer:
        init.name = short(init.name)
    del model.graph.value_info[:]
    data = model.SerializeToString()
    ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return len(data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--times", type=float, default=20.0)
    parser.add_argument("--plan", help="a plan JSON (Plan.to_dict) to add as a row")
    parser.add_argument("--out", default=str(ROOT / "results" / "artifact_bytes.json"))
    args = parser.parse_args()

    from autocompress import api
    from autocompress.compression.apply import apply_plan
    from autocompress.compression.plan import Plan

    workload = api.load_workload(args.model)
    knobs = api.discover_knobs(workload)
    quant = [k for k in knobs if k.name == "quant"]
    plans = {"fp32": Plan()}
    for width in ("w16", "w8", "w4", "w3", "w2"):
        plans[f"uniform {width} (where offered)"] = Plan(
            {k.unit: {"quant": width if width in k.choices else "w8"} for k in quant})
    if args.plan:
        plans["given plan"] = Plan.from_dict(json.loads(Path(args.plan).read_text()))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, plan in plans.items():
            artifact = apply_plan(plan, workload, Path(tmp) / f"{plan.digest()}.onnx")
            rows[name] = split(artifact.path)
    fp32 = rows["fp32"]["file"]
    target = fp32 / args.times
    print(f"{args.model}: fp32 artifact {fp32:,} bytes; {args.times:g}x smaller is "
          f"{target:,.0f} bytes\n")
    print("| plan | file | x smaller | weight tensors | per-channel vectors | graph | "
          f"weights allowed for {args.times:g}x | file with short names | "
          f"weights allowed for {args.times:g}x with short names |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        room = target - r["vectors"] - r["graph"]
        short_graph = r["graph"] - (r["file"] - r["file_short_names"])
        room_short = target - r["vectors"] - short_graph
        r.update(weights_allowed_for_target=room, weights_allowed_with_short_names=room_short)
        print(f"| {name} | {r['file']:,} | {fp32 / r['file']:.1f} | {r['weights']:,} | "
              f"{r['vectors']:,} | {r['graph']:,} | {room:,.0f} | {r['file_short_names']:,} | "
              f"{room_short:,.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "times": args.times,
                                          "target_bytes": target, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
