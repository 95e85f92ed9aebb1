"""FastJet as the generators use it: imported once with its banner silenced, and its spurious warning
on exclusive kT jets kept out of the output (the README cites FastJet)."""

from __future__ import annotations

import contextlib
import functools
import warnings


@functools.cache
def fastjet_module():
    """The ``fastjet`` module with its per-process banner silenced."""
    import fastjet
    import fastjet._swig

    fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)
    return fastjet


@contextlib.contextmanager
def exclusive_jets_of_kt():
    """Silence fastjet's warning on exclusive jets of other algorithms, which it also gives for kT.

    fastjet compares the jet definition itself with the algorithm constants, so the warning is
    raised for every algorithm; it also replaces ``warnings.formatwarning``, restored here.
    """
    formatwarning = warnings.formatwarning
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="dcut and exclusive jets for jet-finders other than kt")
        try:
            yield
        finally:
            warnings.formatwarning = formatwarning
