"""Entries of a regression target's standardisation table (``{center: c, scale: s}`` or ``[c, s]``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hepnn.errors import ConfigError
from hepnn.utils.validation import is_number as finite_number


def center_and_scale(entry, key: str) -> tuple[float, float]:
    """``(center, scale)`` of one table entry in the target's physical unit; errors name ``key``."""
    if isinstance(entry, Mapping):
        unknown = sorted(set(map(str, entry)) - {"center", "scale"})
        if unknown:
            raise ConfigError(f"{key}: unknown key(s) {unknown}; give center and scale")
        c, s = entry.get("center", 0.0), entry.get("scale", 1.0)
    elif isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 2:
        c, s = entry
    else:
        raise ConfigError(f"{key} must be {{center: c, scale: s}} or [c, s], got {entry!r}")
    if not finite_number(c):
        raise ConfigError(f"{key}.center must be a finite number, got {c!r}")
    if not (finite_number(s) and s > 0):
        raise ConfigError(f"{key}.scale must be a positive finite number, got {s!r}")
    return float(c), float(s)
