"""Early exit: exit rate, quality, expected vs full latency, at two thresholds.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/early_exit.py                  # digits-cnn
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/early_exit.py --model minilm \
        --blocks layers.3 layers.4 --thresholds 0.93 0.97 --repeat 20

Each plan is evaluated by the real pipeline (pipeline.Evaluator on the host profile): the
artifact is one ONNX model with an If node; accuracy and exit rate come from running the
held-out evaluation inputs one by one in ONNX Runtime; each path is timed on the workload's
example image (batch 1, 2 threads) with the threshold forced, and the expected latency is
the exit-rate-weighted mix. "plain" is the same model without an exit, re-timed right after
each row (a shared host drifts; compare within a row). The predicted
column is the roofline model's jetson-nano latency (weighted the same way).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autocompress.backends.ort_runner import TimingConfig, make_session, measure_latency  # noqa: E402
from autocompress.cost_models.exit_runtime import expected_prediction  # noqa: E402
from autocompress.cost_models.layers import describe  # noqa: E402
from autocompress.cost_models.roofline import RooflineModel  # noqa: E402
from autocompress.compression.plan import EXIT_AFTER, EXIT_THRESHOLD, Plan  # noqa: E402
from autocompress.device_profiles import resolve_target  # noqa: E402
from autocompress.pipeline import Evaluator  # noqa: E402
from autocompress.workloads import load_workload  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--blocks", nargs="*", default=["blocks.3", "blocks.4"])
    parser.add_argument("--thresholds", nargs="*", type=float, default=[0.9, 0.99])
    args = parser.parse_args()
    workload = load_workload(args.model)
    container = args.blocks[0].rsplit(".", 1)[0]
    shapes = {k: tuple(v.shape) for k, v in workload.example.items()}
    board = RooflineModel(resolve_target("jetson-nano"))
    timing = TimingConfig(warmup=max(3, args.repeat // 10), repeat=args.repeat, threads=2)
    with tempfile.TemporaryDirectory() as tmp:
        host = Evaluator(workload, resolve_target("host"), timing, artifact_root=Path(tmp))
        plain = host.evaluate(Plan())
        plain_ms = plain.host_latency["median_s"] * 1e3
        plain_pred = board.predict(describe(host.artifact_path(Plan()), shapes)).latency_s * 1e3
        print(f"{args.model}: quality = {plain.quality_metric}; host = ONNX Runtime, batch 1, "
              f"2 threads, median of {args.repeat}")
        print("| exit after | threshold | quality | exit rate | exit path | full path (If) "
              "| expected | plain model | predicted jetson-nano (expected / plain) |")
        print("|---|---|---|---|---|---|---|---|---|")
        print(f"| none | | {plain.quality:.4f} | 0 | | | | {plain_ms:.3f} ms "
              f"| {plain_pred:.3f} ms |")
        for block in args.blocks:
            for threshold in args.thresholds:
                plan = Plan({container: {EXIT_AFTER: block, EXIT_THRESHOLD: threshold}})
                m = host.evaluate(plan)
                e = m.early_exit
                plain_ms = measure_latency(make_session(host.artifact_path(Plan())),
                                           workload.example, timing).median_s * 1e3
                pred = expected_prediction(board, host.artifact_path(plan), shapes,
                                           e["exit_rate"])[1].latency_s * 1e3
                print(f"| {block} | {threshold} | {m.quality:.4f} | {e['exit_rate']:.3f} "
                      f"| {e['exit_path_latency']['median_s'] * 1e3:.3f} ms "
                      f"| {e['full_path_latency']['median_s'] * 1e3:.3f} ms "
                      f"| {e['expected_latency_s'] * 1e3:.3f} ms | {plain_ms:.3f} ms "
                      f"| {pred:.3f} / {plain_pred:.3f} ms |", flush=True)


if __name__ == "__main__":
    main()
