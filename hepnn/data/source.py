"""ROOT input files: finding them, checking them against a spec, and cutting them into chunks.

A chunk ``(file, entry_start, entry_stop)`` is the unit of reading. Chunks never cross a file
or a split boundary, so every entry of a split belongs to exactly one chunk.
"""

from __future__ import annotations

import difflib
import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import uproot

from hepnn.data.spec import DataSpec
from hepnn.errors import ConfigError, InputError


class DataInputError(InputError):
    """An input file, tree or branch is missing or unreadable."""


@dataclass(frozen=True)
class InputFile:
    """A checked input file: its path (or URL), index in the file list, and number of entries."""

    index: int
    path: str
    n_entries: int


@dataclass(frozen=True)
class Chunk:
    """Entries ``[start, stop)`` of one input file."""

    file_index: int
    path: str
    start: int
    stop: int

    @property
    def n_entries(self) -> int:
        return self.stop - self.start


def _is_url(path: str) -> bool:
    return "://" in path


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
        if _is_url(pattern):
            files.append(pattern)
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


def open_tree(path: str, tree: str):
    """The TTree ``tree`` of the ROOT file ``path``, with errors naming the file and what exists."""
    try:
        handle = uproot.open(path)
    except FileNotFoundError:
        raise DataInputError(f"input file {path} does not exist") from None
    except Exception as exc:
        raise DataInputError(f"cannot open {path} as a ROOT file: {type(exc).__name__}: {exc}") from exc
    try:
        obj = handle[tree]
    except KeyError:
        trees = sorted({k.split(";")[0] for k, c in handle.classnames().items() if c in ("TTree", "TNtuple")})
        raise DataInputError(
            f"{path}: no tree '{tree}' (data.tree); trees in this file: {trees or 'none'}"
        ) from None
    except Exception as exc:
        raise DataInputError(f"{path}: cannot read tree '{tree}': {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, uproot.behaviors.TTree.TTree):
        raise DataInputError(f"{path}: '{tree}' is a {obj.classname}, not a TTree")
    return obj


def check_branches(tree, path: str, needed: set[str]) -> None:
    """Raise naming the file, tree and each missing branch with its closest existing names."""
    available = set(tree.keys())
    missing = sorted(needed - available)
    if missing:
        details = []
        for name in missing:
            close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
            details.append(f"'{name}'" + (f" (close matches: {', '.join(close)})" if close else ""))
        raise DataInputError(
            f"{path}: tree '{tree.name}' has no branch {', '.join(details)}; "
            f"it has {len(available)} branches: {', '.join(sorted(available)[:40])}"
            f"{' ...' if len(available) > 40 else ''}"
        )


def inspect_files(paths: Sequence[str], spec: DataSpec) -> list[InputFile]:
    """Open every file, check its tree and the branches the spec needs, and count its entries."""
    needed = spec.branches
    files = []
    for index, path in enumerate(paths):
        tree = open_tree(path, spec.tree)
        check_branches(tree, path, needed)
        files.append(InputFile(index=index, path=path, n_entries=int(tree.num_entries)))
    return files


def plan_chunks(files: Sequence[InputFile], spec: DataSpec, split: str, chunk_size: int) -> list[Chunk]:
    """Chunks of at most ``chunk_size`` entries covering the ``split`` range of every file once."""
    if chunk_size < 1:
        raise ConfigError(f"data.chunk_size must be positive, got {chunk_size}")
    chunks = []
    for f in files:
        start, stop = spec.split.ranges(f.n_entries)[split]
        for s in range(start, stop, chunk_size):
            chunks.append(Chunk(f.index, f.path, s, min(s + chunk_size, stop)))
    return chunks
