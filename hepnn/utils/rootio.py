"""Writing ROOT files safely: every file appears complete under its final name or not at all."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import awkward as ak
import numpy as np
import uproot


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    On any exception the temporary file is removed, so no half-written file is left behind.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _tree_columns(columns: Mapping[str, np.ndarray | ak.Array]) -> dict[str, np.ndarray | ak.Array]:
    """Columns as uproot writes them: flat arrays as they are, jagged ``<prefix>_<field>`` columns
    zipped into one record array per collection (so they share the counter branch ``n<prefix>``).

    The collection is the text before the first ``_`` (``part_px`` -> ``part``). Columns of one
    prefix with different list lengths are split by the first two parts of their names
    (``cell_ecal_deta`` -> ``cell_ecal``, ``cell_hcal_deta`` -> ``cell_hcal``).
    """
    out: dict[str, np.ndarray | ak.Array] = {}
    by_prefix: dict[str, dict[str, ak.Array]] = {}
    for name, values in columns.items():
        if isinstance(values, ak.Array) and values.ndim == 2:
            prefix, _, field = name.partition("_")
            if not field:
                raise ValueError(f"jagged column {name!r} needs a 'prefix_field' name to share a counter")
            by_prefix.setdefault(prefix, {})[name] = values
        else:
            out[name] = np.asarray(values)
    for prefix, named in by_prefix.items():
        groups = {prefix: named}
        if not _same_lengths(named.values()):
            groups = {}
            for name, values in named.items():
                parts = name.split("_")
                if len(parts) < 3:
                    raise ValueError(
                        f"jagged column {name!r} has other list lengths than other '{prefix}_*' columns; "
                        f"name collections of their own as '{prefix}_<collection>_<field>'"
                    )
                groups.setdefault(f"{parts[0]}_{parts[1]}", {})[name] = values
        for collection, members in groups.items():
            if not _same_lengths(members.values()):
                raise ValueError(f"the jagged columns {sorted(members)} must have equal list lengths")
            out[collection] = ak.zip({name[len(collection) + 1 :]: v for name, v in members.items()})
    return out


def _same_lengths(arrays) -> bool:
    counts = [ak.to_numpy(ak.num(a, axis=1)) for a in arrays]
    return all(np.array_equal(counts[0], c) for c in counts[1:])


def _branch_types(columns: Mapping[str, np.ndarray | ak.Array]) -> dict[str, object]:
    """uproot ``mktree`` branch types of :func:`_tree_columns` output (a numpy column of more than one
    axis is a fixed-size array branch, e.g. an image per entry)."""
    return {
        k: v.type.content
        if isinstance(v, ak.Array)
        else np.dtype((v.dtype, v.shape[1:]))
        if v.ndim > 1
        else v.dtype
        for k, v in columns.items()
    }


def write_tree(
    path: str | os.PathLike,
    tree: str,
    columns: Mapping[str, np.ndarray | ak.Array],
    *,
    title: str = "",
    metadata: Mapping[str, str] | None = None,
    basket_entries: int = 100_000,
    compression: uproot.compression.Compression | None = None,
) -> Path:
    """Write ``columns`` (equal-length flat, fixed-shape or jagged arrays) as a TTree, atomically.

    Jagged columns named ``<prefix>_<field>`` become ``<prefix>_<field>`` branches with a shared
    counter ``n<prefix>`` (e.g. ``part_px`` with ``npart``), as in the JetClass files; see
    :func:`_tree_columns` for collections of one prefix with other list lengths.
    ``metadata`` strings are stored as ``TObjString`` objects next to the tree. Every
    ``basket_entries`` entries start a new basket (cluster), compressed with ``compression``
    (default ZLIB level 1).
    """
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns for tree {tree!r} in {path} have different lengths: {lengths}")
    n = next(iter(lengths.values()), 0)
    with atomic_path(path) as tmp:
        with uproot.recreate(tmp, compression=compression or uproot.ZLIB(1)) as out:
            grouped = _tree_columns(columns)
            out.mktree(tree, _branch_types(grouped), title=title)
            for start in range(0, n, basket_entries):
                out[tree].extend({k: v[start : start + basket_entries] for k, v in grouped.items()})
            for key, text in (metadata or {}).items():
                out[key] = text
    return Path(path)


def write_parquet(
    path: str | os.PathLike, columns: Mapping[str, np.ndarray], *, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write equal-length flat ``columns`` as a Parquet table, atomically (temporary name, then rename).

    ``metadata`` strings go into the table's schema metadata (``pyarrow.parquet.read_schema(path)
    .metadata``, keys and values as bytes).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns for {path} have different lengths: {lengths}")
    table = pa.table({name: np.asarray(values) for name, values in columns.items()})
    table = table.replace_schema_metadata({k: str(v) for k, v in (metadata or {}).items()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)
