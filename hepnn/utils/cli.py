"""``key=value`` command lines of the small entry points (``hepnn.plot``, ``hepnn.export``)."""

from __future__ import annotations

from collections.abc import Sequence


class UsageError(ValueError):
    """A bad command line (the entry points exit with status 2)."""


def key_value_args(argv: Sequence[str], keys: Sequence[str], usage: str) -> dict[str, str]:
    """``key=value`` arguments (a leading ``+`` is ignored, as in Hydra overrides) as a dict;
    :class:`UsageError` quoting ``usage`` for an argument that is not ``key=value`` with a known key."""
    values: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+")
        if not sep or key not in keys:
            raise UsageError(f"unexpected argument {arg!r}; {usage}")
        values[key] = value
    return values
