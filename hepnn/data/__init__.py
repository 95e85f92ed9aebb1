"""From ROOT files to batches of named tensors, declared by a data configuration.

The layers, each in a module of its own, in the order data flows through them:

- ``spec``: :class:`DataSpec`, the declarative data configuration (inputs, labels, targets,
  weights, observers, selection, split), checked key by key (:class:`DataConfigError`);
- ``expressions``: the restricted evaluator of derived variables and selections (whitelisted
  numpy/awkward functions, never ``eval``; :class:`ExpressionError`), with ``jagged`` (its flat
  fast path for jagged arrays);
- ``source`` and ``remote``: input files (local, ``root://``), trees and branches checked before
  any work, and chunks ``(file, entry_start, entry_stop)`` (:class:`DataInputError`);
- ``preprocess``, ``images``, ``standardize``, ``columns``: a chunk's features computed on flat
  arrays, jet images, automatic standardisation, and per-entry columns read outside batches
  (observers, baselines; :class:`DataValueError` for values that violate the spec);
- ``sharding``, ``dataset`` and ``cache``: chunks dealt out to DDP ranks and DataLoader workers so
  that every entry is seen exactly once per epoch, shuffled and batched, optionally cached;
- ``loading``: :class:`BatchLoader`, the DataLoader behind the batches, and the machinery that
  makes it fast (shared-memory hand-off, fork server, read-ahead thread, compiled kernels);
- ``datamodule``: :class:`RootDataModule`, the LightningDataModule a data config instantiates.

Other packages import from here, not from the modules: the names below are the public face.
:class:`RootDataModule` and :class:`BatchLoader` are imported when first used (they bring in
Lightning and the loader's machinery).
"""

from __future__ import annotations

from hepnn.data.expressions import ExpressionError
from hepnn.data.preprocess import NONFINITE_COUNT, DataValueError
from hepnn.data.remote import RemoteInputError
from hepnn.data.source import DataInputError, InputFile, resolve_files
from hepnn.data.spec import DataConfigError, DataSpec, InputGroup, image_config

__all__ = [
    "NONFINITE_COUNT",
    "BatchLoader",
    "DataConfigError",
    "DataInputError",
    "DataSpec",
    "DataValueError",
    "ExpressionError",
    "InputFile",
    "InputGroup",
    "RemoteInputError",
    "RootDataModule",
    "image_config",
    "read_entry_columns",
    "resolve_files",
    "whole_file_chunks",
]

_LAZY = {
    "RootDataModule": "hepnn.data.datamodule",
    "BatchLoader": "hepnn.data.loading",
    "read_entry_columns": "hepnn.data.columns",
    "whole_file_chunks": "hepnn.data.columns",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hepnn.data' has no attribute {name!r}")
