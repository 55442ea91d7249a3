"""Sizes as simbdp prints them: one way everywhere, binary units (KiB = 2^10 bytes, MiB =
2^20, GiB = 2^30), the units of the profile defaults (``100MiB`` a file, ``10GiB`` a day)."""

from __future__ import annotations

__all__ = ["MIB", "format_bytes", "mib"]

MIB = 2**20
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def mib(n: float) -> float:
    """``n`` bytes in MiB."""
    return n / MIB


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest unit under which it is at least 1: ``512 B``, ``1.5 KiB``,
    ``100 MiB``, ``10 GiB`` (three significant digits, no trailing zeros)."""
    value, unit = float(n), 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{int(n)} B"
    return f"{value:.3g} {_UNITS[unit]}" if value < 1000 else f"{value:.0f} {_UNITS[unit]}"
