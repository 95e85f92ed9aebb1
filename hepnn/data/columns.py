"""Per-entry columns read outside the batches: observers of every entry of a file, or the baseline
and reweighting variables of a split's selected entries with their class labels.

Only the branches the named variables need are read, chunk by chunk; every value must be one
number per entry (an error names the key, the file and the entries otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hepnn.data.expressions import VariableResolver, required_branches
from hepnn.data.preprocess import build_labels, per_entry_values, selection_mask
from hepnn.data.source import Chunk, InputFile, open_tree, read_entries
from hepnn.data.spec import DataSpec

LABEL = "label"


def read_entry_columns(
    spec: DataSpec,
    chunks: Sequence[Chunk],
    names: Sequence[str],
    keys: Sequence[str] | None = None,
    selected: bool = True,
    labels: bool = False,
) -> dict[str, np.ndarray]:
    """The variables ``names`` (branches or ``data.variables``) of the entries of ``chunks``, one
    array each, concatenated chunk by chunk in entry order.

    ``keys`` name each variable's config key in errors (default ``data.observers.<name>``). With
    ``selected`` only the entries passing ``data.selection`` are read; with ``labels`` the class
    index of every entry comes along under ``label``.
    """
    keys = list(keys) if keys is not None else [f"data.observers.{name}" for name in names]
    needed = set(names)
    if selected and spec.selection is not None:
        needed |= set(spec.selection.names)
    if labels:
        for expression in [*spec.labels.values(), spec.label_index]:
            if expression is not None:
                needed |= set(expression.names)
    branches = sorted(required_branches(needed, spec.variables))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in [*names, *([LABEL] if labels else [])]}
    trees: dict[str, object] = {}
    for chunk in chunks:
        tree = trees.get(chunk.path) or trees.setdefault(chunk.path, open_tree(chunk.path, spec.tree))
        arrays = read_entries(tree, chunk, branches)
        source = chunk.describe(spec.tree)
        entries = np.arange(chunk.start, chunk.stop, dtype=np.int64)
        if selected and spec.selection is not None:
            keep = selection_mask(arrays, spec, source)
            arrays, entries = arrays[keep], entries[keep]
        resolve = VariableResolver(arrays, spec.variables)
        for name, key in zip(names, keys, strict=True):
            parts[name].append(per_entry_values(resolve(name), len(arrays), f"{source}: {key}"))
        if labels:
            parts[LABEL].append(build_labels(spec, resolve, entries, source))
    empty = np.zeros(0, dtype=np.float64)
    return {name: np.concatenate(values) if values else empty for name, values in parts.items()}


def whole_file_chunks(files: Sequence[InputFile]) -> list[Chunk]:
    """One chunk per file covering all its entries."""
    return [Chunk(f.index, f.path, 0, f.n_entries) for f in files]
