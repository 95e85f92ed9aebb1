"""Streaming dataset: chunks of ROOT files dealt across DDP ranks and DataLoader workers.

Every epoch, the chunk list of a split is put in a seeded order (a new one every epoch for
training, a fixed one for evaluation) and its selected entries are dealt in contiguous pieces
to (global rank, worker) pairs (:mod:`hepnn.data.sharding`): every selected entry is read
exactly once per epoch, by exactly one worker, and every rank runs the same number of batches.
Workers preprocess whole chunks with vectorised code (:mod:`hepnn.data.preprocess`) and yield
ready batches (:mod:`hepnn.data.batching`; use the DataLoader with ``batch_size=None``).

The shuffle buffer is a reservoir of entry indices: once it holds more than ``buffer_size``
entries, batches are drawn at random from all of it and the rest stays, so late batches mix
entries of all chunks read so far, not only of the last ones. A read piece (a store) lives while
one of its entries waits, and its last ones wait long, so the sparsest stores' waiting entries
are copied together whenever the stores hold more than twice the entries waiting
(:func:`compact_stores`). Memory is then bounded by about ``2 (buffer_size + batch_size) +
(2 + read_ahead) chunk_size`` entries per worker (in the compact jagged form), independent of the
dataset size. With ``read_ahead`` > 0, a background thread reads and
preprocesses the next pieces while batches are built (:mod:`hepnn.data.loading.readahead`). With a
chunk cache (:mod:`hepnn.data.cache`), later epochs load preprocessed chunks instead of reading
ROOT.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from hepnn.data.batching import BatchBuilder, nest_observers
from hepnn.data.cache import ChunkCache
from hepnn.data.loading.handoff import BatchHandoff
from hepnn.data.loading.memory import keep_freed_memory
from hepnn.data.loading.readahead import ReadAhead
from hepnn.data.preprocess import ChunkData, preprocess_chunk
from hepnn.data.sharding import Piece, batch_plan, batches_before, deal
from hepnn.data.source import Chunk, DataInputError, open_tree, read_entries
from hepnn.data.spec import DataSpec
from hepnn.errors import ConfigError

MAX_OPEN_FILES = 32  # per process; each open file holds a file descriptor and a memory map


def distributed_rank_and_size() -> tuple[int, int]:
    """Global rank and world size of the current process (0, 1 outside distributed training)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# A worker's stores (preprocessed pieces) hold at most this many entries per entry waiting in its
# reservoir: beyond it, the sparsest stores' waiting entries are copied together (compact_stores)
RETAINED_PER_WAITING = 2.0


def compact_stores(
    stores: dict,
    live_store: np.ndarray,
    live_row: np.ndarray,
    new_id: int,
    limit: float = RETAINED_PER_WAITING,
) -> bool:
    """Copy the waiting entries of the sparsest stores into one new store ``new_id`` if the stores
    hold more than ``limit`` entries per waiting entry; returns whether it did.

    Batches are drawn at random from the whole reservoir, so a store's last entries wait long,
    and without this a worker would keep many stores alive for a few waiting entries each, far
    more entries than its reservoir holds. Copying the waiting entries of the sparsest stores
    together keeps what a worker holds within ``limit`` times the entries waiting, which bounds
    its memory; the batches stay exactly the same (:meth:`ChunkedRootDataset._build` gathers a
    batch's entries piece by piece, whatever store they are in). Only stores in this process's
    heap count (read pieces; not those not read yet, nor those mapped from the chunk cache).
    ``live_store``/``live_row`` (store and row of each waiting entry) change in place.
    """
    owned = [i for i, data in stores.items() if isinstance(data, ChunkData) and not data.mapped]
    if len(owned) < 2:
        return False
    waiting = np.bincount(live_store, minlength=max(stores) + 1)
    retained = sum(len(stores[i]) for i in owned)
    allowed = limit * sum(int(waiting[i]) for i in owned)
    if retained <= allowed:
        return False
    chosen, moved = [], 0
    for i in sorted(owned, key=lambda i: waiting[i] / len(stores[i])):
        chosen.append(i)
        retained -= len(stores[i])
        moved += int(waiting[i])
        if retained + moved <= allowed:
            break
    parts, position = [], 0
    for i in chosen:
        where = np.flatnonzero(live_store == i)
        where = where[np.argsort(live_row[where])]  # copied in the order they lie in memory
        parts.append((stores.pop(i), live_row[where]))
        live_store[where] = new_id
        live_row[where] = np.arange(position, position + len(where))
        position += len(where)
    stores[new_id] = ChunkData.gather(parts)
    return True


@dataclass(frozen=True)
class WorkerPlan:
    """What the DataLoader workers of a :class:`ChunkedRootDataset` must know from the process that
    started them: its (global rank, world size), which they cannot ask torch.distributed for, and
    the shared-memory hand-off their batches go through."""

    position: tuple[int, int]
    handoff: BatchHandoff


def epoch_order(n_chunks: int, seed: int, epoch: int) -> np.ndarray:
    """This epoch's order of the chunks: a permutation seeded by (seed, epoch), identical on all ranks.

    Evaluation datasets always use epoch 0: a fixed order that still mixes files, so that the
    first batches (``limit_val_batches``, ``fast_dev_run``) are not all from one file.
    """
    return np.random.default_rng([seed, epoch]).permutation(n_chunks)


class ChunkedRootDataset(IterableDataset):
    """Batches of one split, read chunk by chunk from ROOT files.

    ``counts[i]`` is the number of entries of ``chunks[i]`` that pass the selection.
    ``num_workers`` must equal the DataLoader's (it fixes how entries are dealt and the length).
    ``read_ahead``: pieces read ahead by a background thread of each worker (0: none).
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
        counts: Sequence[int] | None = None,
        cache_dir=None,
        augment: bool = False,
        read_ahead: int = 0,
    ):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        self.spec = spec
        self.chunks = list(chunks)
        self.counts = list(counts) if counts is not None else [c.n_entries for c in self.chunks]
        if len(self.counts) != len(self.chunks):
            raise ValueError("one selected-entry count per chunk is needed")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment  # training-time augmentation (image flips) as configured in the spec
        self.seed = seed
        self.buffer_size = max(buffer_size, 0) if shuffle else 0
        self.num_workers = num_workers
        if isinstance(read_ahead, bool) or not isinstance(read_ahead, int) or read_ahead < 0:
            raise ConfigError(f"data.read_ahead must be a non-negative integer, got {read_ahead!r}")
        self.read_ahead = read_ahead
        self.cache = ChunkCache(cache_dir) if cache_dir else None
        self.epoch = 0
        # batches of this epoch already trained on by this rank (resuming an interrupted epoch)
        self.resume_after = 0
        self._position: tuple[int, int] | None = None  # see at_position
        self._trees: OrderedDict[str, object] = OrderedDict()  # open trees, least recently used first

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_trees"] = OrderedDict()
        return state

    def position(self) -> tuple[int, int]:
        """The (global rank, world size) whose share of the entries this process reads."""
        return self._position or distributed_rank_and_size()

    def at_position(self, rank: int, world_size: int) -> ChunkedRootDataset:
        """A copy that reads the share of rank ``rank`` of ``world_size``, whatever torch.distributed
        says (to read one rank's share outside a distributed run); the dataset itself is unchanged."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        other = copy.copy(self)
        other._position = (int(rank), int(world_size))
        other._trees = OrderedDict()
        return other

    def set_epoch(self, epoch: int, resume_after: int = 0) -> None:
        """Use ``epoch``'s shuffling; skip the first ``resume_after`` batches of this rank.

        ``resume_after``: batches of an interrupted epoch that were already trained on (counted in
        the order the DataLoader delivers them); exactly the other batches of the epoch follow, with
        the contents they would have had without the interruption (with several workers in another
        order: the DataLoader's turn starts with worker 0 again).
        """
        self.epoch = int(epoch)
        self.resume_after = int(resume_after)

    @property
    def n_entries(self) -> int:
        """Selected entries of this split, over all ranks."""
        return sum(self.counts)

    def plan(self, world_size: int | None = None):
        """This epoch's ``pieces[rank][worker]`` and batch ``sizes[rank][worker]``.

        See :mod:`hepnn.data.sharding`; the plan is the same on every rank and worker.
        """
        if world_size is None:
            _, world_size = self.position()
        workers = max(self.num_workers, 1)
        order = epoch_order(len(self.chunks), self.seed, self.epoch if self.shuffle else 0)
        pieces = deal([self.chunks[i] for i in order], [self.counts[i] for i in order], world_size, workers)
        sizes = batch_plan([[sum(p.n_selected for p in w) for w in r] for r in pieces], self.batch_size)
        return pieces, sizes

    def __len__(self) -> int:
        """Batches of this rank per epoch (all its workers); the same on every rank.

        A resumed epoch yields ``len - resume_after`` of them; its length stays that of the whole
        epoch, as the trainer counts the batches trained before the interruption.
        """
        rank, _ = self.position()
        _, sizes = self.plan()
        return sum(len(s) for s in sizes[rank])

    def _tree(self, path: str):
        tree = self._trees.get(path)
        if tree is None:
            tree = self._trees[path] = open_tree(path, self.spec.tree)
            if len(self._trees) > MAX_OPEN_FILES:
                _, oldest = self._trees.popitem(last=False)
                oldest.file.close()
        else:
            self._trees.move_to_end(path)
        return tree

    def _read(self, chunk: Chunk) -> ChunkData:
        tree = self._tree(chunk.path)
        arrays = read_entries(tree, chunk, sorted(self.spec.branches))
        return preprocess_chunk(
            arrays, self.spec, chunk.file_index, chunk.start, chunk.describe(self.spec.tree)
        )

    def load(self, piece: Piece) -> ChunkData:
        """The preprocessed selected entries of ``piece``."""
        chunk: Chunk = piece.chunk
        if self.cache is not None:
            data = self.cache.load(chunk)
            if data is None:
                data = self._read(chunk)
                self.cache.store(chunk, data)
        elif self.spec.selection is None:
            # without a selection, selected entry k is entry start + k: read only the piece
            part = Chunk(chunk.file_index, chunk.path, chunk.start + piece.first, chunk.start + piece.last)
            return self._read(part)
        else:
            data = self._read(chunk)
        if piece.last > len(data):
            raise DataInputError(
                f"{chunk.describe(self.spec.tree)} has {len(data)} selected entries, fewer than the "
                f"{piece.last} counted when the run started: did the file change?"
            )
        return data.select(slice(piece.first, piece.last))

    def __iter__(self) -> Iterator[dict]:
        return self.batches()

    def batches(self, plan: WorkerPlan | None = None) -> Iterator:
        """This process's batches of the epoch: numpy dicts, or, in a worker given a
        :class:`WorkerPlan`, :class:`~hepnn.data.loading.handoff.SharedBatch` messages."""
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != max(self.num_workers, 1):
            raise RuntimeError(
                f"dataset was set up for {self.num_workers} workers but the DataLoader has {info.num_workers}"
            )
        if info is not None:
            keep_freed_memory()  # a fresh process (see hepnn.data.loading.memory)
        handoff = plan.handoff if plan is not None else None
        if handoff is not None:
            # a worker of a BatchLoader, persistent or not: this epoch's settings come from there
            self.epoch, self.resume_after = handoff.epoch_settings()
        rank, world = plan.position if plan is not None else self.position()
        pieces, sizes = self.plan(world)
        skip = batches_before([len(s) for s in sizes[rank]], self.resume_after)[worker]
        yield from self._batches(pieces[rank][worker], sizes[rank][worker], rank, worker, skip, handoff)

    def _batches(
        self, pieces: list[Piece], sizes: list[int], rank: int, worker: int, skip: int = 0, handoff=None
    ):
        """This worker's batches: padded numpy dicts, or :class:`SharedBatch` messages.

        The first ``skip`` batches are drawn but not built (resuming an interrupted epoch): the
        shuffling is the same as in an uninterrupted epoch, and a piece is read only when a built
        batch needs one of its entries (then the ``read_ahead`` pieces after it are read ahead).
        """
        with ReadAhead(self.load, pieces, self.read_ahead) as reader:
            yield from self._drawn_batches(reader, pieces, sizes, rank, worker, skip, handoff)

    def _drawn_batches(
        self, reader: ReadAhead, pieces: list[Piece], sizes: list[int], rank, worker, skip, handoff
    ):
        builder = BatchBuilder(self.spec)
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        stores: dict[int, ChunkData | Piece] = {}  # a Piece until a built batch needs its entries
        # the reservoir, one element per waiting entry: the store that holds it, its row there, and
        # the piece it came from (a store is a piece's own data, or a compaction of several)
        live_store = np.empty(0, dtype=np.int64)
        live_row = np.empty(0, dtype=np.int64)
        live_piece = np.empty(0, dtype=np.int64)
        next_store = len(pieces)  # ids of compacted stores follow the pieces' own
        sizes = list(reversed(sizes))
        drawn = 0

        def draw(size: int):
            nonlocal live_store, live_row, live_piece, drawn
            ids, rows, origins = live_store[:size], live_row[:size], live_piece[:size]
            live_store, live_row, live_piece = live_store[size:], live_row[size:], live_piece[size:]
            drawn += 1
            if drawn <= skip:
                return None
            # augmentation seeded per batch: a resumed epoch flips as an uninterrupted one would
            augment = (
                np.random.default_rng([self.seed, self.epoch, rank, worker, 1, drawn])
                if self.augment
                else None
            )
            loaded = self._loaded(stores, ids, reader)
            return self._build(builder, loaded, ids, rows, origins, augment, handoff, worker)

        for store_id, piece in enumerate(pieces):
            stores[store_id] = piece
            live_store = np.concatenate([live_store, np.full(piece.n_selected, store_id)])
            live_row = np.concatenate([live_row, np.arange(piece.n_selected)])
            live_piece = np.concatenate([live_piece, np.full(piece.n_selected, store_id)])
            if self.shuffle:
                order = rng.permutation(len(live_row))
                live_store, live_row, live_piece = live_store[order], live_row[order], live_piece[order]
            while sizes and len(live_row) - self.buffer_size >= sizes[-1]:
                batch = draw(sizes.pop())
                if batch is not None:
                    yield batch
            for unused in set(stores) - set(np.unique(live_store).tolist()):
                del stores[unused]
            if compact_stores(stores, live_store, live_row, next_store):
                next_store += 1
        while sizes:
            batch = draw(sizes.pop())
            if batch is not None:
                yield batch
        if len(live_row):
            raise AssertionError(f"{len(live_row)} entries left after the planned batches")

    def _loaded(self, stores: dict, store_ids: np.ndarray, reader: ReadAhead) -> dict:
        """``stores`` with the pieces that ``store_ids`` refers to read and preprocessed (a store's
        id is its piece's index in this worker's list)."""
        for store_id in np.unique(store_ids).tolist():
            if isinstance(stores[store_id], Piece):
                stores[store_id] = reader.get(store_id)
        return stores

    def _build(
        self,
        builder: BatchBuilder,
        stores: dict,
        store_ids: np.ndarray,
        rows: np.ndarray,
        origins: np.ndarray,
        augment,
        handoff: BatchHandoff | None,
        worker: int,
    ):
        # one part per piece the entries came from, in piece order (compaction moves all waiting
        # entries of a piece together, so the batch does not depend on what was compacted)
        parts = []
        for origin in np.unique(origins):
            picked = origins == origin
            parts.append((stores[int(store_ids[picked][0])], rows[picked]))
        if handoff is not None:
            return handoff.publish(worker, lambda allocate: builder.build(parts, allocate, augment))
        return nest_observers(builder.build(parts, augment=augment))
