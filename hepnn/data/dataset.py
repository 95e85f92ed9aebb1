"""Streaming dataset: chunks of ROOT files dealt across DDP ranks and DataLoader workers.

Every epoch, the chunk list of a split is put in a seeded order (a new one every epoch for
training, a fixed one for evaluation), viewed as one sequence of entries, and cut into
``world_size x num_workers`` contiguous, equally large pieces (sizes differ by at most one
entry); each (global rank, worker) reads its own piece. Every entry of the split is therefore
read exactly once per epoch, by exactly one worker. Workers preprocess whole chunks with
vectorised code and yield ready batches (use the DataLoader with ``batch_size=None``).

The shuffle buffer is a reservoir: once it holds more than ``buffer_size`` entries, batches are
drawn at random from all of it and the rest stays, so late batches mix entries of all chunks
read so far, not only of the last ones. Memory is bounded by
``buffer_size + chunk_size + batch_size`` entries per worker, independent of the dataset size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import awkward as ak
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from hepnn.data.preprocess import preprocess_chunk
from hepnn.data.source import Chunk, DataInputError, open_tree
from hepnn.data.spec import DataSpec
from hepnn.errors import ConfigError


def distributed_rank_and_size() -> tuple[int, int]:
    """Global rank and world size of the current process (0, 1 outside distributed training)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def epoch_chunk_order(chunks: Sequence[Chunk], seed: int, epoch: int) -> list[Chunk]:
    """The chunks in this epoch's order: a permutation seeded by (seed, epoch), identical on all ranks.

    Evaluation datasets always use epoch 0: a fixed order that still mixes files, so that the
    first batches (``limit_val_batches``, ``fast_dev_run``) are not all from one file.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(chunks))
    return [chunks[i] for i in order]


def deal_entries(chunks: Sequence[Chunk], n_parts: int) -> list[list[Chunk]]:
    """Cut the entry sequence of ``chunks`` into ``n_parts`` contiguous pieces of near-equal size.

    Piece ``k`` holds entries ``[k N / n_parts, (k+1) N / n_parts)`` of the concatenated
    sequence (``N`` entries in all); chunks straddling a boundary are split. The union of the
    pieces is exactly the input, with no entry repeated.
    """
    total = sum(c.n_entries for c in chunks)
    bounds = [k * total // n_parts for k in range(n_parts + 1)]
    parts: list[list[Chunk]] = [[] for _ in range(n_parts)]
    offset = 0
    part = 0
    for chunk in chunks:
        start = 0
        while start < chunk.n_entries:
            while offset + start >= bounds[part + 1]:
                part += 1
            take = min(chunk.n_entries - start, bounds[part + 1] - (offset + start))
            parts[part].append(
                Chunk(chunk.file_index, chunk.path, chunk.start + start, chunk.start + start + take)
            )
            start += take
        offset += chunk.n_entries
    return parts


def _concatenate(parts: list[dict]) -> dict:
    out = {}
    for key, value in parts[0].items():
        if isinstance(value, dict):
            out[key] = _concatenate([p[key] for p in parts])
        else:
            out[key] = np.concatenate([p[key] for p in parts]) if len(parts) > 1 else value
    return out


def _take(columns: dict, index) -> dict:
    return {k: _take(v, index) if isinstance(v, dict) else v[index] for k, v in columns.items()}


def _length(columns: dict) -> int:
    return len(columns["entry"])


def _to_torch(columns: dict) -> dict:
    return {
        k: _to_torch(v) if isinstance(v, dict) else torch.from_numpy(np.ascontiguousarray(v))
        for k, v in columns.items()
    }


class ChunkedRootDataset(IterableDataset):
    """Batches of one split, read chunk by chunk from ROOT files.

    ``num_workers`` must equal the DataLoader's (it fixes how entries are dealt and the length).
    Call :meth:`set_epoch` before each epoch to change the shuffling.
    """

    def __init__(
        self,
        spec: DataSpec,
        chunks: Sequence[Chunk],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        buffer_size: int,
        num_workers: int,
    ):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        self.spec = spec
        self.chunks = list(chunks)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_size = max(buffer_size, 0) if shuffle else 0
        self.num_workers = num_workers
        self.epoch = 0
        self._trees: dict[str, object] = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_trees"] = {}
        return state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def n_entries(self) -> int:
        """Entries of this split before the selection, over all ranks."""
        return sum(c.n_entries for c in self.chunks)

    def _pieces(self) -> tuple[list[list[Chunk]], int]:
        rank, world = distributed_rank_and_size()
        workers = max(self.num_workers, 1)
        ordered = epoch_chunk_order(self.chunks, self.seed, self.epoch if self.shuffle else 0)
        return deal_entries(ordered, world * workers), rank * workers

    def __len__(self) -> int:
        """Batches this rank yields per epoch (all its workers); unknown if a selection is applied."""
        if self.spec.selection is not None:
            raise TypeError("the number of batches is unknown before reading when data.selection is set")
        pieces, first = self._pieces()
        workers = max(self.num_workers, 1)
        return sum(
            math.ceil(sum(c.n_entries for c in p) / self.batch_size) for p in pieces[first : first + workers]
        )

    def _read(self, chunk: Chunk) -> dict:
        source = f"{chunk.path} (tree '{self.spec.tree}', entries {chunk.start}-{chunk.stop})"
        tree = self._trees.get(chunk.path)
        if tree is None:
            tree = self._trees[chunk.path] = open_tree(chunk.path, self.spec.tree)
        try:
            arrays = tree.arrays(
                sorted(self.spec.branches), entry_start=chunk.start, entry_stop=chunk.stop, library="ak"
            )
        except Exception as exc:
            raise DataInputError(f"cannot read {source}: {type(exc).__name__}: {exc}") from exc
        return preprocess_chunk(ak.Array(arrays), self.spec, chunk.file_index, chunk.start, source)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != max(self.num_workers, 1):
            raise RuntimeError(
                f"dataset was set up for {self.num_workers} workers but the DataLoader has {info.num_workers}"
            )
        pieces, first = self._pieces()
        mine = pieces[first + worker]
        rng = np.random.default_rng([self.seed, self.epoch, first + worker])
        buffer: list[dict] = []
        n_buffered = 0
        for chunk in mine:
            columns = self._read(chunk)
            if _length(columns) == 0:
                continue
            buffer.append(columns)
            n_buffered += _length(columns)
            n_out = (n_buffered - self.buffer_size) // self.batch_size * self.batch_size
            if n_out > 0:
                merged = _concatenate(buffer)
                if self.shuffle:
                    # a reservoir: entries stay mixed with those of every chunk read so far
                    merged = _take(merged, rng.permutation(n_buffered))
                for start in range(0, n_out, self.batch_size):
                    yield _to_torch(_take(merged, slice(start, start + self.batch_size)))
                buffer = [_take(merged, slice(n_out, None))]
                n_buffered -= n_out
        if n_buffered:
            merged = _concatenate(buffer)
            if self.shuffle:
                merged = _take(merged, rng.permutation(n_buffered))
            for start in range(0, n_buffered, self.batch_size):
                yield _to_torch(_take(merged, slice(start, start + self.batch_size)))
