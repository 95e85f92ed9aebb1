"""Errors caused by what the user gave hepnn (files, trees, branches, values, config keys).

Their messages name what was asked for and what exists, so the entry points print the message
alone instead of a traceback (see :func:`report_input_errors`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class InputError(ValueError):
    """Bad input: a missing or unreadable file, tree or branch, or values that violate the spec."""


class ConfigError(InputError):
    """A configuration key is missing, unknown, or has an unusable value."""


def find_input_error(exc: BaseException | None) -> InputError | None:
    """The InputError behind ``exc`` (itself, or its cause, e.g. under Hydra's InstantiationException)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def report_input_errors() -> Iterator[None]:
    """In an entry point: turn an InputError into a one-line message and exit status 1."""
    try:
        yield
    except Exception as exc:
        error = find_input_error(exc)
        if error is None:
            raise
        raise SystemExit(f"hepnn: error: {error}") from None
