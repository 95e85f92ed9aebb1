"""ROOT input files: finding them, checking them against a spec, and cutting them into chunks.

A chunk ``(file, entry_start, entry_stop)`` is the unit of reading. Chunks never cross a file
or a split boundary, so every entry of a split belongs to exactly one chunk.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import itertools
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import uproot

from hepnn.data.expressions import required_branches
from hepnn.data.remote import expand_remote, is_remote, uproot_open_options
from hepnn.data.spec import DataSpec
from hepnn.errors import ConfigError, InputError

TREE_CLASSES = ("TTree", "TNtuple", "ROOT::RNTuple")
BAD_FILE_POLICIES = ("error", "skip")

log = logging.getLogger(__name__)


class DataInputError(InputError):
    """An input file, tree or branch is missing or unreadable."""


@dataclass(frozen=True)
class InputFile:
    """A checked input file: its path (or URL), index in the file list, entries and cluster starts.

    ``file_id`` identifies the file's content (its ROOT UUID with path and size), for caches.
    ``clusters`` are the entry numbers where baskets/clusters start, ending with ``n_entries``.
    """

    index: int
    path: str
    n_entries: int
    file_id: str = ""
    clusters: tuple[int, ...] = ()


@dataclass(frozen=True)
class Chunk:
    """Entries ``[start, stop)`` of one input file."""

    file_index: int
    path: str
    start: int
    stop: int
    file_id: str = ""

    @property
    def n_entries(self) -> int:
        return self.stop - self.start

    def describe(self, tree: str) -> str:
        return f"{self.path} (tree '{tree}', entries {self.start}-{self.stop})"


def resolve_files(patterns: str | Sequence[str], key: str = "data.files") -> list[str]:
    """Expand globs (local) in ``patterns`` into a sorted, de-duplicated list of files.

    URLs (``root://...``) are kept as given. Raises :class:`DataInputError` naming ``key`` and
    the pattern when a pattern matches nothing.
    """
    if isinstance(patterns, str | os.PathLike):
        patterns = [str(patterns)]
    if not patterns:
        raise DataInputError(f"{key} is empty: give a file, a glob or a list of them")
    files: list[str] = []
    for pattern in patterns:
        pattern = str(pattern)
        if is_remote(pattern):
            files.extend(expand_remote(pattern, key))
            continue
        expanded = os.path.expanduser(pattern)
        matches = (
            sorted(glob.glob(expanded))
            if glob.has_magic(expanded)
            else ([expanded] if Path(expanded).exists() else [])
        )
        if not matches:
            raise DataInputError(
                f"{key}: no input file matches {pattern!r} (working directory {os.getcwd()})"
            )
        files.extend(str(Path(m).resolve()) for m in matches)
    return list(dict.fromkeys(files))


def open_file(path: str):
    """The open ROOT file ``path`` (local or remote), with errors naming it.

    Local files are memory-mapped (uproot 5.7's default for them, fsspec, reads the same bytes
    through a thread). uproot's array cache is off: the loader reads each basket once per epoch,
    and that cache would hold up to 100 MB per open file.
    """
    options = uproot_open_options(path) if is_remote(path) else {"handler": uproot.source.file.MemmapSource}
    try:
        return uproot.open(path, array_cache=None, **options)
    except FileNotFoundError:
        raise DataInputError(f"input file {path} does not exist") from None
    except InputError:
        raise
    except Exception as exc:
        raise DataInputError(
            f"cannot open {path} as a ROOT file (truncated or corrupt?): {type(exc).__name__}: {exc}"
        ) from exc


def check_complete(handle, path: str) -> None:
    """Raise if the file is shorter than its header says (truncated by a failed copy or write)."""
    try:
        expected, actual = int(handle.fEND), int(handle.source.num_bytes)
    except Exception:  # a source that cannot tell its size: nothing to compare
        return
    if actual < expected:
        raise DataInputError(
            f"cannot open {path} as a ROOT file (truncated or corrupt?): it has {actual} bytes, but its "
            f"header says the file ends at byte {expected}"
        )


def open_tree(path: str, tree: str):
    """The TTree or RNTuple ``tree`` of the file ``path``; errors name the file and the trees it has."""
    handle = open_file(path)
    try:
        obj = handle[tree]
    except KeyError:
        trees = sorted({k.split(";")[0] for k, c in handle.classnames().items() if c in TREE_CLASSES})
        raise DataInputError(
            f"{path}: no tree '{tree}' (data.tree); trees in this file: {trees or 'none'}"
        ) from None
    except Exception as exc:
        raise DataInputError(
            f"{path}: cannot read tree '{tree}' (truncated or corrupt?): {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(obj, uproot.behaviors.TTree.TTree | uproot.behaviors.RNTuple.RNTuple):
        raise DataInputError(f"{path}: '{tree}' is a {obj.classname}, not a TTree or RNTuple")
    return obj


def cluster_starts(tree) -> tuple[int, ...]:
    """Entry numbers where the clusters (groups of baskets) of a TTree or RNTuple start, plus the end."""
    if isinstance(tree, uproot.behaviors.RNTuple.RNTuple):
        starts = [int(c.num_first_entry) for c in tree.cluster_summaries]
        return (*starts, int(tree.num_entries)) if starts else (0, int(tree.num_entries))
    return tuple(int(x) for x in tree.common_entry_offsets())


def read_entries(tree, chunk: Chunk, branches: list[str]):
    """The awkward record array of ``branches`` for the entries of ``chunk``."""
    try:
        return tree.arrays(branches, entry_start=chunk.start, entry_stop=chunk.stop, library="ak")
    except Exception as exc:
        raise DataInputError(
            f"cannot read {chunk.describe(tree.name)}, branches {', '.join(branches)} "
            f"(corrupt file?): {type(exc).__name__}: {exc}"
        ) from exc


def check_branches(tree, path: str, needed: set[str], key: str | None = None) -> None:
    """Raise naming the file, tree and each missing branch with its closest existing names (and the
    config ``key`` that needs them, when given)."""
    available = set(tree.keys())
    missing = sorted(needed - available)
    if missing:
        details = []
        for name in missing:
            close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
            details.append(f"'{name}'" + (f" (close matches: {', '.join(close)})" if close else ""))
        needing = f"{key} needs a branch that " if key else ""
        raise DataInputError(
            f"{path}: {needing}tree '{tree.name}' has no branch {', '.join(details)}; "
            f"it has {len(available)} branches: {', '.join(sorted(available)[:40])}"
            f"{' ...' if len(available) > 40 else ''}"
        )


def inspect_file(index: int, path: str, spec: DataSpec) -> InputFile:
    """Open one file, check its tree and the branches the spec needs, and read its layout."""
    tree = open_tree(path, spec.tree)
    check_complete(tree.file, path)
    for name in spec.baseline:
        check_branches(tree, path, set(required_branches({name}, spec.variables)), f"data.baseline ({name})")
    check_branches(tree, path, set(spec.branches))
    try:
        clusters = cluster_starts(tree)
    except Exception as exc:
        raise DataInputError(f"{path}: cannot read the cluster layout of tree '{spec.tree}': {exc}") from exc
    handle = tree.file
    identity = f"{path}|{handle.uuid}|{tree.num_entries}"
    return InputFile(
        index=index,
        path=path,
        n_entries=int(tree.num_entries),
        file_id=hashlib.sha256(identity.encode()).hexdigest()[:16],
        clusters=clusters,
    )


def inspect_files(
    paths: Sequence[str], spec: DataSpec, on_bad_file: str = "error"
) -> tuple[list[InputFile], list[str]]:
    """Check every file (see :func:`inspect_file`); returns the good files and the skipped ones.

    With ``on_bad_file="skip"``, a file that cannot be opened or read (truncated, corrupt) is
    skipped with a warning; missing files, trees or branches are always errors.
    """
    if on_bad_file not in BAD_FILE_POLICIES:
        raise ConfigError(f"data.on_bad_file must be one of {BAD_FILE_POLICIES}, got {on_bad_file!r}")
    files: list[InputFile] = []
    skipped: list[str] = []
    for path in paths:
        try:
            files.append(inspect_file(len(files), path, spec))
        except DataInputError as exc:
            unreadable = "truncated or corrupt" in str(exc) or "cluster layout" in str(exc)
            if on_bad_file != "skip" or not unreadable:
                raise
            log.warning("data.on_bad_file=skip: skipping %s", exc)
            skipped.append(path)
    return files, skipped


def plan_chunks(
    files: Sequence[InputFile], spec: DataSpec, split: str | None, chunk_size: int
) -> list[Chunk]:
    """Chunks covering the ``split`` range of every file once (``split=None``: all entries).

    Chunk boundaries fall on cluster (basket) boundaries where possible, so that no basket is
    decompressed twice: a chunk holds whole clusters up to about ``chunk_size`` entries (one
    larger cluster forms a chunk on its own; a split boundary may cut a cluster).
    """
    if chunk_size < 1:
        raise ConfigError(f"data.chunk_size must be positive, got {chunk_size}")
    chunks = []
    for f in files:
        start, stop = spec.split.ranges(f.n_entries)[split] if split else (0, f.n_entries)
        bounds = [start, *(c for c in f.clusters if start < c < stop), stop]
        edges = [start]
        for i, bound in enumerate(bounds[1:], start=1):
            if bound == stop or bounds[i + 1] - edges[-1] > chunk_size:
                # close the chunk here; a single cluster above chunk_size is cut into equal parts
                first = edges[-1]
                n_parts = math.ceil((bound - first) / chunk_size)
                edges.extend(first + (bound - first) * k // n_parts for k in range(1, n_parts + 1))
        for s, e in itertools.pairwise(edges):
            chunks.append(Chunk(f.index, f.path, s, e, f.file_id))
    return chunks


def count_selected(chunks: Sequence[Chunk], spec: DataSpec) -> list[int]:
    """Entries of each chunk that pass ``data.selection`` (reads only the branches the selection needs)."""
    from hepnn.data.preprocess import selection_mask

    if spec.selection is None:
        return [c.n_entries for c in chunks]
    branches = sorted(required_branches(set(spec.selection.names), spec.variables))
    counts = []
    trees: dict[str, object] = {}
    for chunk in chunks:
        tree = trees.get(chunk.path) or trees.setdefault(chunk.path, open_tree(chunk.path, spec.tree))
        arrays = read_entries(tree, chunk, branches)
        counts.append(int(selection_mask(arrays, spec, chunk.describe(spec.tree)).sum()))
    return counts
