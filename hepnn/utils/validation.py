"""Checks of single configuration values, shared by the nets and the simulations.

Every check takes the value and the config key it came from (e.g. ``"trace_layers[1].kernel"``
or ``"generate.array.spacing"``), returns the value when it is usable and otherwise raises
:class:`~hepnn.errors.ConfigError` with a one-line message that names the key, what was
expected and what was given. Booleans never pass for integers or numbers (``True`` is an
``int`` in Python, but ``channels: true`` in a YAML file is a mistake).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

from hepnn.errors import ConfigError


def _unit(unit: str | None) -> str:
    return f" ({unit})" if unit else ""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def require(condition: bool, key: str, expected: str, value, error: type[ConfigError] = ConfigError) -> None:
    """Raise ``"<key> must be <expected>, got <value>"`` unless ``condition`` holds (range checks);
    ``error`` is the exception class (a :class:`ConfigError`, e.g. the data spec's own)."""
    if not condition:
        raise error(f"{key} must be {expected}, got {value!r}")


def boolean(value, key: str) -> bool:
    """``value`` if it is ``True`` or ``False``."""
    require(isinstance(value, bool), key, "true or false", value)
    return value


def integer(value, key: str) -> int:
    """``value`` if it is an integer (not a bool)."""
    require(_is_int(value), key, "an integer", value)
    return value


def positive_int(value, key: str, error: type[ConfigError] = ConfigError) -> int:
    """``value`` if it is an integer >= 1 (not a bool)."""
    require(_is_int(value) and value >= 1, key, "a positive integer", value, error)
    return value


def non_negative_int(value, key: str, error: type[ConfigError] = ConfigError) -> int:
    """``value`` if it is an integer >= 0 (not a bool)."""
    require(_is_int(value) and value >= 0, key, "a non-negative integer", value, error)
    return value


def is_int(value) -> bool:
    """True for an int that is not a bool."""
    return _is_int(value)


def is_number(value) -> bool:
    """True for a finite int or float (not a bool)."""
    return _is_number(value)


def number(value, key: str, unit: str | None = None) -> float:
    """``value`` as a float if it is a finite int or float (not a bool); ``unit`` (e.g. ``"ns"``)
    is named in the message."""
    require(_is_number(value), key, f"a number{_unit(unit)}", value)
    return float(value)


def positive_number(value, key: str, unit: str | None = None) -> float:
    """``value`` as a float if it is a finite number > 0."""
    require(number(value, key, unit) > 0, key, f"positive{_unit(unit)}", value)
    return float(value)


def non_negative_number(value, key: str, unit: str | None = None) -> float:
    """``value`` as a float if it is a finite number >= 0."""
    if number(value, key, unit) < 0:
        raise ConfigError(f"{key} must not be negative{_unit(unit)}, got {value!r}")
    return float(value)


def dropout_rate(value, key: str) -> float:
    """``value`` if it is a number in [0, 1): the probability of dropping a unit."""
    require(_is_number(value) and 0.0 <= value < 1.0, key, "in [0, 1)", value)
    return value


def number_list(value, key: str) -> list[float]:
    """``value`` as a list of floats if it is a list (or tuple) of finite numbers."""
    require(
        isinstance(value, list | tuple) and all(_is_number(v) for v in value), key, "a list of numbers", value
    )
    return [float(v) for v in value]


def string(value, key: str) -> str:
    """``value`` if it is a string."""
    require(isinstance(value, str), key, "a string", value)
    return value


def _alternatives(names: list, optional: bool) -> str:
    if len(names) == 2 and not optional:
        return f"{names[0]} or {names[1]}"
    return f"one of {names}" + (" or null" if optional else "")


def choice(value, key: str, allowed: Collection, optional: bool = False):
    """``value`` if it is one of ``allowed`` (or None, with ``optional``). The message lists
    ``allowed`` in the order given: ``"a or b"`` for two, ``"one of [...]"`` otherwise."""
    names = list(allowed)  # compared with ==: an unhashable value is simply not among them
    if (value is None and optional) or (value is not None and value in names):
        return value
    raise ConfigError(f"{key} must be {_alternatives(names, optional)}, got {value!r}")


def int_pair(value, key: str, minimum: int) -> tuple[int, int]:
    """An int or a two-element sequence of ints as an ``(h, w)`` pair, every element >= ``minimum``."""
    values = (value, value) if _is_int(value) else value
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != 2:
        raise ConfigError(f"{key} must be an int or a pair [h, w], got {value!r}")
    pair = tuple(values)
    if not all(_is_int(v) and v >= minimum for v in pair):
        raise ConfigError(f"{key} must hold integers >= {minimum}, got {value!r}")
    return pair  # type: ignore[return-value]


def mapping(value, key: str, known: Sequence[str], required: Sequence[str] = ()) -> Mapping:
    """``value`` if it is a mapping whose keys are all in ``known`` and include ``required``."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping of {list(known)}, got {value!r}")
    unknown = sorted(set(map(str, value)) - set(known))
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {unknown}; known keys are {list(known)}")
    for name in required:
        if name not in value:
            raise ConfigError(f"{key}: key {name!r} is required")
    return value


def mapping_list(value, key: str, what: str, allow_empty: bool = True) -> list:
    """``value`` as a list if it is a list (not a mapping or string) of, presumably, ``what``
    mappings (each is checked by its own parser); empty only with ``allow_empty``."""
    is_list = isinstance(value, Sequence) and not isinstance(value, str | Mapping)
    if not is_list or (not value and not allow_empty):
        kind = "a list" if allow_empty else "a non-empty list"
        raise ConfigError(f"{key} must be {kind} of {what} mappings, got {value!r}")
    return list(value)
