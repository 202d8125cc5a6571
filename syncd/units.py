"""Sizes and times as people read and write them: one rule for every command. Sizes
in binary units (KiB = 1024 B), the units the provider's caps are counted in (the
config's sizes, the emulator's ``--max-bytes`` and every size syncd shows); times in
ISO 8601, UTC."""

from __future__ import annotations

import re
import time

# Compiled on first use (re caches it), not by every command that imports this module.
_SIZE = r"(?i)^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$"
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str | int) -> int:
    """``500MB``/``100GB``/``1.5GiB``/``10 KiB``/plain bytes -> bytes. ``MB`` and ``MiB``
    are the same binary multiple, as in the provider's pages (its "100GB" is 100 GiB)."""
    if isinstance(text, int):
        return text
    m = re.match(_SIZE, str(text))
    if not m:
        raise ValueError(f"invalid size: {text!r}")
    unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(float(m.group(1)) * _UNITS[unit])


def size_text(n: int) -> str:
    """A size as a config would write it, exactly: ``100GiB``, ``512KiB``, ``1000``."""
    for unit in ("T", "G", "M", "K"):
        if n and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}iB"
    return str(n)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def iso_utc(t: float | None) -> str | None:
    """A unix time as ISO 8601 in UTC, to the second (``2026-12-07T04:05:57Z``)."""
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
