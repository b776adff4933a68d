"""The device loop on a transformer (issue 14): `search --rpc-tracker --rpc-key` on a BERT-like
workload, against TVM's tracker and an `autocompress rpc-server` board on loopback.

The workload is tests/tiny_transformer.py: MiniLM's own module classes at width 32 (attention
with a mask, LayerNorm, GELU, token ids + attention mask in, mean-pooled embedding out),
exported by the same path as `--model minilm`, so every candidate reaches TVM with the
shape subgraphs and masks that MiniLM's graphs have (folded by backends/tvm_prepare.py).
"""
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time

import onnx
import pytest

from autocompress.backends import tvm_rpc
from autocompress.cli import main

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
    uncompressed = next(p for p in front if p["plan"]["units"] == {})
    model = onnx.load(str(run / uncompressed["artifact"]))
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    ops = {node.op_type for node in model.graph.node}
    assert {"Softmax", "LayerNormalization", "Erf", "Shape", "Gather"} <= ops
    # each board measurement joined the board's calibration (TVM on host is its own device)
    samples = json.loads((cache / "calibration" / "host-tvm.json").read_text())["samples"]
    assert len(samples) == 2 and all(s["source"].startswith("board ") for s in samples)
