"""Human units at the edge, SI base units inside: bytes, seconds, joules.

``MB``/``KB``/``GB`` are decimal (10^3 steps); ``MiB``/``KiB``/``GiB`` are binary
(2^10 steps). A bare number is taken in the base unit (bytes, seconds, joules).
"""
from __future__ import annotations

import re

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"

SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
}
TIME_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
ENERGY_UNITS = {"": 1.0, "j": 1.0, "mj": 1e-3, "uj": 1e-6, "µj": 1e-6}


class UnitError(ValueError):
    """A human quantity that could not be parsed; the message says what is accepted."""


def _parse(text: str, units: dict, kind: str, example: str) -> float:
    match = re.fullmatch(_NUMBER + r"\s*([a-zA-Zµ]*)", str(text).strip())
    unit = match.group(2).lower() if match else None
    if match is None or unit not in units:
        raise UnitError(f"cannot parse {kind} {text!r}: expected a number with one of "
                        f"{', '.join(u for u in units if u) } (e.g. {example})")
    value = float(match.group(1)) * units[unit]
    if value <= 0:
        raise UnitError(f"{kind} {text!r} must be positive")
    return value


def parse_size(text: str) -> int:
    """``"4MB"`` -> 4_000_000 (decimal), ``"4MiB"`` -> 4_194_304 (binary), ``"4e6"`` -> 4_000_000."""
    return int(round(_parse(text, SIZE_UNITS, "size", "4MB = 4*10^6 bytes, 4MiB = 4*2^20 bytes")))


def parse_time(text: str) -> float:
    """``"30ms"`` -> 0.03 seconds."""
    return _parse(text, TIME_UNITS, "time", "30ms, 0.03s")


DURATION_UNITS = {**TIME_UNITS, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A time box: ``"15m"`` -> 900 seconds, ``"90s"``, ``"1h"``; ``"0"`` (or ``"off"``) -> 0."""
    if str(text).strip().lower() in ("0", "0s", "0m", "off", "none"):
        return 0.0
    return _parse(text, DURATION_UNITS, "duration", "15m, 90s, 0 to switch off")


def parse_energy(text: str) -> float:
    """``"50mJ"`` -> 0.05 joules."""
    return _parse(text, ENERGY_UNITS, "energy", "50mJ, 0.05J")


def format_size(n_bytes: float) -> str:
    """Decimal megabytes, the unit the budget flag uses by default."""
    if n_bytes >= 10**6:
        return f"{n_bytes / 10**6:.2f} MB"
    return f"{n_bytes / 10**3:.1f} kB"


def format_time(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def format_energy(joules: float) -> str:
    return f"{joules * 1e3:.2f} mJ" if joules < 1 else f"{joules:.2f} J"
