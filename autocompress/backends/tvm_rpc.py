"""Device in the loop: time compiled candidates on real boards through TVM's RPC tracker.

A board runs ``autocompress rpc-server --tracker HOST:PORT --key KEY`` (TVM's RPC server plus
our sensor function) or TVM's own ``python -m tvm.exec.rpc_server`` (latency only). The search
asks the tracker for a free board under the key, uploads the library, loads it into a Relax VM
on the board and times it with TVM's ``time_evaluator``: the distribution (median, p10, p90 of
``repeat`` timed runs, fewer for a model too slow to run that often in ``max_timed_s``),
the board's peak resident memory, and energy where the board has power
sensors. Several boards under one key are used in parallel by :meth:`RpcDevice.measure_many`.

Servers and trackers started here bind to 127.0.0.1 unless the caller names another host.
"""
from __future__ import annotations

import contextlib
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from . import sensors

LOOPBACK = "127.0.0.1"
MIN_REPEATS = 5


class RpcError(RuntimeError):
    """A tracker or board that cannot be reached or used; the message says which."""


@dataclass
class DeviceMeasurement:
    """What one board measured for one library."""

    median_s: float
    p10_s: float
    p90_s: float
    repeats: int
    samples_s: list
    board: str | None
    runtime: str
    peak_ram_bytes: int | None = None
    energy_j: float | None = None
    power_source: str | None = None
    absent: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_tracker(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RpcError(f"--rpc-tracker must be HOST:PORT, got {address!r}")
    return host, int(port)


@dataclass(frozen=True)
class RpcDevice:
    """Boards registered with a tracker under one key."""

    tracker_host: str
    tracker_port: int
    key: str
    repeat: int = 30
    session_timeout_s: float = 600.0
    max_timed_s: float = 10.0   # fewer timed runs (>= MIN_REPEATS) when `repeat` would take longer

    @classmethod
    def parse(cls, tracker: str, key: str, **kwargs) -> "RpcDevice":
        if not key:
            raise RpcError("--rpc-key is required with --rpc-tracker")
        host, port = parse_tracker(tracker)
        return cls(host, port, key, **kwargs)

    @property
    def name(self) -> str:
        return f"{self.key}@{self.tracker_host}:{self.tracker_port}"

    def _tracker(self):
        import socket

        from tvm import rpc

        try:   # TVM retries a refused connection for a minute; say so at once instead
            socket.create_connection((self.tracker_host, self.tracker_port), timeout=5).close()
        except OSError as err:
            raise RpcError(f"cannot reach the RPC tracker at {self.tracker_host}:"
                           f"{self.tracker_port}: {err.strerror or err}") from None
        try:
            return rpc.connect_tracker(self.tracker_host, self.tracker_port)
        except Exception as err:
            raise RpcError(f"cannot reach the RPC tracker at {self.tracker_host}:"
                           f"{self.tracker_port}: {str(err).splitlines()[0]}") from None

    def check(self) -> int:
        """Fail with one clear line unless at least one board is registered under the key."""
        summary = self._tracker().summary()
        servers = [s for s in summary.get("server_info", [])
                   if str(s.get("key", "")).split(":")[-1] == self.key]
        if not servers:
            raise RpcError(f"no board is registered under key {self.key!r} at tracker "
                           f"{self.tracker_host}:{self.tracker_port}")
        return len(servers)

    def measure(self, library: Path | str, inputs: Mapping[str, np.ndarray],
                input_names: Sequence[str], device_kind: str = "cpu") -> DeviceMeasurement:
        """Upload ``library`` to a free board, run it, and time it there."""
        import tvm
        from tvm import relax

        try:
            remote = self._tracker().request(self.key, priority=1,
                                             session_timeout=self.session_timeout_s)
        except RpcError:
            raise
        except Exception as err:
            raise RpcError(f"no board under key {self.key!r}: {str(err).splitlines()[0]}") from None
        before = _remote_sensors(remote)
        library = Path(library)
        remote.upload(str(library))
        module = remote.load_module(library.name)
        device = remote.cuda(0) if device_kind == "cuda" else remote.cpu(0)
        vm = relax.VirtualMachine(module, device)
        args = [tvm.runtime.tensor(np.require(inputs[n], requirements="C"), device) for n in input_names]
        start = time.perf_counter()
        vm["main"](*args)                      # warm-up (and CUDA's module load)
        timer = vm.time_evaluator("main", device, number=1,
                                  repeat=self.repeats_for(time.perf_counter() - start))
        start_sensors = _remote_sensors(remote)
        samples = [float(s) for s in timer(*args).results]
        after = _remote_sensors(remote)
        with contextlib.suppress(Exception):
            remote.remove(library.name)
        return _summarise(samples, before, start_sensors, after,
                          f"TVM {tvm.__version__} RPC ({device_kind})")

    def repeats_for(self, warm_up_s: float) -> int:
        """Timed runs for a model whose warm-up took ``warm_up_s``: ``repeat``, or as many as
        fit in ``max_timed_s`` (untuned MiniLM runs about 2 s a time on a CPU), at least
        MIN_REPEATS. The count is recorded with every measurement."""
        fit = int(self.max_timed_s / warm_up_s) if warm_up_s > 0 else self.repeat
        return max(MIN_REPEATS, min(self.repeat, fit))

    def measure_many(self, jobs: Sequence[tuple], device_kind: str = "cpu",
                     parallel: int | None = None) -> list:
        """Measure several libraries, one board each at a time, on every board of the key in
        parallel (a device farm). ``jobs``: (library, inputs, input_names). Returns a
        DeviceMeasurement or the RpcError for each job, in order."""
        workers = parallel or max(1, self.check())

        def one(job):
            try:
                return self.measure(*job, device_kind=device_kind)
            except Exception as err:   # recorded per job; the others go on
                return err if isinstance(err, RpcError) else RpcError(str(err).splitlines()[0])

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, jobs))


def _remote_sensors(remote) -> dict | None:
    try:
        return json.loads(remote.get_function(sensors.REMOTE_FUNCTION)())
    except Exception:
        return None


def _summarise(samples: list, before, start, after, runtime: str) -> DeviceMeasurement:
    from .ort_runner import spread

    median, p10, p90 = spread(samples)
    result = DeviceMeasurement(median, p10, p90, len(samples), samples, None, runtime)
    if after is None:
        result.absent = ["board sensors: the RPC server does not offer autocompress's sensor "
                         "function (start it with `autocompress rpc-server`)"]
        return result
    result.board = after.get("board")
    result.absent = list(after.get("absent", []))
    if before and before.get("rss_bytes") and after.get("hwm_bytes"):
        result.peak_ram_bytes = max(0, after["hwm_bytes"] - before["rss_bytes"])
    if start and start.get("energy_j") is not None and after.get("energy_j") is not None:
        result.energy_j = (after["energy_j"] - start["energy_j"]) / len(samples)
        result.power_source = "RAPL package energy counter (delta over the timed runs)"
    elif after.get("power_w") is not None:
        watts = [r["power_w"] for r in (start, after) if r and r.get("power_w") is not None]
        result.energy_j = statistics.mean(watts) * median
        result.power_source = "INA3221 rails (mean of readings around the timed runs) x median latency"
    return result


def start_server(tracker: str | None, key: str, host: str = LOOPBACK, port: int = 9090,
                 port_end: int | None = None):
    """TVM's RPC server with our sensor function, registered with a tracker under ``key``.
    It takes the first free port in [port, port_end) (default: the 100 ports from ``port``)."""
    from tvm.rpc.server import Server

    tracker_addr = parse_tracker(tracker) if tracker else None
    port_end = port + 100 if port_end is None else port_end
    try:
        return Server(host=host, port=port, port_end=port_end, tracker_addr=tracker_addr,
                      key=key, silent=True,
                      server_init_callback=sensors.register_remote_functions)
    except ValueError as err:   # TVM's text is a whole traceback from its worker process
        if "cannot bind" not in str(err):
            raise
        raise RpcError(f"the RPC server cannot listen on {host}: no free port in "
                       f"[{port}, {port_end})") from None


@contextlib.contextmanager
def local_farm(boards: int = 1, key: str = "host", host: str = LOOPBACK,
               tracker_port: int = 9190):
    """A tracker and ``boards`` RPC servers on this machine (loopback): for tests and for
    measuring the host the way a board is measured. Yields the RpcDevice."""
    from tvm.rpc.tracker import Tracker

    tracker = Tracker(host=host, port=tracker_port, port_end=tracker_port + 100, silent=True)
    servers = []
    try:
        servers = [start_server(f"{host}:{tracker.port}", key, host=host, port=9090 + 200,
                                port_end=9090 + 400) for _ in range(boards)]
        device = RpcDevice(host, tracker.port, key)
        deadline = time.monotonic() + 30
        while True:
            try:
                if device.check() >= boards:
                    break
            except RpcError:
                pass
            if time.monotonic() > deadline:
                raise RpcError(f"{boards} local RPC servers did not register with the tracker")
            time.sleep(0.2)
        yield device
    finally:
        for server in servers:
            server.terminate()
        tracker.terminate()
