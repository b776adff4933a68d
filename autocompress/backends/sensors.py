"""Power and memory readings on the machine this code runs on (a board's RPC server, or here).

Sources: Jetson INA3221 rails (sysfs, milliwatts), Intel/AMD RAPL package energy counters
(powercap sysfs, microjoules), and this process's resident memory (/proc/self/status).
An absent sensor reads as None with the reason; nothing is ever estimated here.
"""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path

RAPL_GLOB = "/sys/class/powercap/intel-rapl:[0-9]*/energy_uj"
INA3221_GLOBS = (
    "/sys/bus/i2c/drivers/ina3221x/*/iio:device*/in_power[0-9]_input",   # L4T R32 (Nano)
    "/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/power[0-9]_input",       # newer kernels
)


def rapl_energy_j() -> float | None:
    """Sum of the RAPL package energy counters, in joules, or None without readable RAPL."""
    total, found = 0.0, False
    for path in sorted(glob.glob(RAPL_GLOB)):
        try:
            total += int(Path(path).read_text()) * 1e-6
            found = True
        except (OSError, ValueError):
            continue
    return total if found else None


def ina3221_power_w() -> float | None:
    """Instantaneous board power summed over the INA3221 rails, in watts, or None."""
    total, found = 0.0, False
    for pattern in INA3221_GLOBS:
        for path in sorted(glob.glob(pattern)):
            try:
                value = float(Path(path).read_text())
            except (OSError, ValueError):
                continue
            total += value * (1e-3 if "in_power" in path else 1e-6)   # mW (iio) / uW (hwmon)
            found = True
    return total if found else None


def memory_bytes() -> dict:
    """This process's resident set now (VmRSS) and its peak so far (VmHWM)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"rss_bytes": out.get("VmRSS"), "hwm_bytes": out.get("VmHWM")}


def read() -> dict:
    """One reading of every source; missing ones are None and named in ``absent``."""
    energy, power = rapl_energy_j(), ina3221_power_w()
    absent = []
    if energy is None:
        absent.append("RAPL energy counters (powercap) not readable")
    if power is None:
        absent.append("INA3221 power rails not found")
    return {"energy_j": energy, "power_w": power, **memory_bytes(),
            "board": f"{os.uname().nodename}/pid{os.getppid()}", "absent": absent}


def read_json() -> str:
    """:func:`read` as JSON text: the form the RPC server function returns."""
    return json.dumps(read())


REMOTE_FUNCTION = "autocompress.sensors.read"


def register_remote_functions() -> None:
    """Make :func:`read_json` callable over TVM RPC (run inside the RPC server process)."""
    import tvm_ffi

    tvm_ffi.register_global_func(REMOTE_FUNCTION, read_json, override=True)
