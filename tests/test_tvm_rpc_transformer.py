"""The device loop on a transformer (issue 14): `search --rpc-tracker --rpc-key` on a BERT-like
workload, against TVM's tracker and an `autocompress rpc-server` board on loopback.

The workload is tests/tiny_transformer.py: MiniLM's own module classes at width 32 (attention
with a mask, LayerNorm, GELU, token ids + attention mask in, mean-pooled embedding out),
exported by the same path as `--model minilm`, so every candidate reaches TVM with the
shape subgraphs and masks that MiniLM's graphs have (folded by backends/tvm_prepare.py).
"""
import contextlib
import dataclasses
import json
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest

from autocompress.backends import ort_runner, tvm_compile, tvm_rpc
from autocompress.cli import main
from autocompress.compression.apply import apply_plan
from autocompress.compression.plan import Plan
from autocompress.device_profiles import resolve_target
from tests.tiny_transformer import make_tiny_transformer

TRANSFORMER = "tests.tiny_transformer:make_tiny_transformer"
SERVER_PORT = 9420   # above TVM's default server range [9090, 9199): the board picks its own


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@contextlib.contextmanager
def board_at_tracker(key: str = "host"):
    """TVM's tracker here and one `autocompress rpc-server` process registered with it, both on
    127.0.0.1, as a user starts them; yields the RpcDevice the search will use. Both start at
    once (each imports TVM in a fresh process: most of the wait on a busy machine)."""
    from tvm.rpc.tracker import Tracker

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "import sys; from autocompress.cli import main; sys.exit(main())",
         "rpc-server", "--tracker", f"{tvm_rpc.LOOPBACK}:{port}", "--key", key,
         "--port", str(SERVER_PORT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tracker = None
    try:
        tracker = Tracker(host=tvm_rpc.LOOPBACK, port=port, port_end=port + 1, silent=True)
        device = tvm_rpc.RpcDevice(tvm_rpc.LOOPBACK, tracker.port, key)
        deadline = time.monotonic() + 120
        while not _registered(device):
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "rpc-server did not register with the tracker"
            time.sleep(0.3)
        yield device
    finally:
        server.send_signal(signal.SIGINT)    # its `finally` stops TVM's server process too
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if tracker is not None:
            tracker.terminate()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((tvm_rpc.LOOPBACK, 0))
        return probe.getsockname()[1]


def _registered(device) -> bool:
    try:
        return device.check() >= 1
    except tvm_rpc.RpcError:
        return False


def test_search_over_rpc_measures_every_transformer_candidate_on_the_board(tmp_path, cache):
    run = tmp_path / "run"
    with board_at_tracker() as device:
        code = main(["search", "--model", TRANSFORMER, "--target", "host", "--trials", "2",
                     "--rpc-tracker", f"{tvm_rpc.LOOPBACK}:{device.tracker_port}",
                     "--rpc-key", "host", "--cost", "measured", "--no-sensitivity",
                     "--no-multi-fidelity", "--finalize", "0", "--out", str(run)])
        assert code == 0
        front = json.loads((run / "pareto.json").read_text())["front"]
        uncompressed = next(p for p in front if p["plan"]["units"] == {})
        # a model too slow for 30 runs in max_timed_s (untuned MiniLM: ~2 s a run) gets fewer
        workload = make_tiny_transformer()
        library = tvm_compile.compile_onnx(run / uncompressed["artifact"], {
            k: v.shape for k, v in workload.example.items()}, resolve_target("host"))
        timed = dataclasses.replace(device, max_timed_s=0.0).measure(
            library.path, workload.example, workload.input_names)
        assert timed.repeats == len(timed.samples_s) == tvm_rpc.MIN_REPEATS
    assert len(front) == 2    # the anchors: uncompressed, and every block dropped
    for point in front:
        provenance = point["provenance"]["latency_s"]
        assert provenance["kind"] == "measured" and provenance["device"] == "host"
        assert provenance["rpc"] == f"host@127.0.0.1:{device.tracker_port}"
        assert provenance["runtime"].startswith("TVM") and provenance["board"]
        assert point["latency_s"] == provenance["median_s"] > 0
        assert provenance["p10_s"] <= provenance["median_s"] <= provenance["p90_s"]
        assert provenance["repeats"] == device.repeat
        assert point["provenance"]["peak_ram_bytes"]["rpc"] == provenance["rpc"]
        assert point["timings_s"]["tvm_compile"] > 0 and point["timings_s"]["device"] > 0
    # what the board ran was a transformer graph as MiniLM exports it
    model = onnx.load(str(run / uncompressed["artifact"]))
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    ops = {node.op_type for node in model.graph.node}
    assert {"Softmax", "LayerNormalization", "Erf", "Shape", "Gather"} <= ops
    # each board measurement joined the board's calibration (TVM on host is its own device)
    samples = json.loads((cache / "calibration" / "host-tvm.json").read_text())["samples"]
    assert len(samples) == 2 and all(s["source"].startswith("board ") for s in samples)


def test_an_early_exits_int4_branch_weights_compile_and_agree(tmp_path, cache):
    """MiniLM's device loop failed a trial: an early exit's `rest` branch holds its own INT4
    weights, which TVM's importer read as one byte each (TensorCopyFromBytes: size mismatch).
    tvm_prepare now folds weight subgraphs inside branches too. Both paths are compared with
    ONNX Runtime: the artifact as built (these inputs exit), and a copy whose stored
    threshold no input reaches (every input runs the INT4 branch)."""
    from onnx import numpy_helper

    from autocompress.compression.early_exit import THRESHOLD_NAME

    workload = make_tiny_transformer()
    plan = Plan({"layers": {"exit_after": "layers.1", "exit_threshold": 0.95},
                 "layers.2.ffn.fc1": {"quant": "w4"}})
    model = onnx.load(str(apply_plan(plan, workload, tmp_path / "exit.onnx").path))
    branch = next(a.g for n in model.graph.node if n.op_type == "If"
                  for a in n.attribute if a.g.initializer)
    assert any(t.data_type == onnx.TensorProto.INT4 for t in branch.initializer)
    shapes = {k: v.shape for k, v in workload.example.items()}
    for threshold, exits in ((0.95, True), (1.5, False)):
        stored = next(t for t in model.graph.initializer if t.name == THRESHOLD_NAME)
        stored.CopyFrom(numpy_helper.from_array(np.array(threshold, np.float32), THRESHOLD_NAME))
        path = tmp_path / f"exit-{threshold}.onnx"
        onnx.save(model, str(path))
        library = tvm_compile.compile_onnx(path, shapes, resolve_target("host"))
        session = ort_runner.make_session(path)
        for row in range(2):
            one = {k: v[row:row + 1] for k, v in workload.evaluation[0].items()}
            want, exited = session.run(None, one)[:2]
            assert bool(exited) is exits
            got = tvm_compile.run_local(library.path, one, workload.input_names)[0]
            assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
