"""Handing finished batches from DataLoader workers to the main process through shared memory.

A plain DataLoader pickles every batch through a pipe, or moves each tensor's memory to a new
shared-memory segment; either way the main process, which also trains, handles every array of
every batch once more. Here each worker owns ``slots`` shared-memory arenas and builds each batch
directly in a free one, always the lowest-numbered: a worker creates an arena only when it first
needs it, so it creates (and the main process maps) only as many as it has batches in flight or
lent at once.
Through the pipe goes only a small :class:`SharedBatch` message (worker, slot, where each array
lies; the arena's memory itself only the first time a slot is used).

The main process lends the arena itself to the consumer: the batch's tensors are views of the
slot's shared memory, and the slot becomes free again when the last of them (or of any view
taken from them) is freed. Only ``lend`` slots per worker are lent at a time; while that many
batches are still held (Lightning keeps the current batch and the next one; a user may keep
any number), further batches are copied out of their slot, one ``memcpy`` per array, and the
slot is free at once. So a worker never waits on batches the consumer keeps, and a kept batch
is never overwritten.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

ALIGN = 64  # bytes; every array in an arena starts on a cache line
POLL_SECONDS = 1e-4
LEND = 4  # slots per worker lent to the consumer at a time (see the module docstring)


@dataclass
class SharedBatch:
    """The message a worker sends for one batch built in shared memory.

    ``layout`` lists ``(key, dtype, shape, byte offset)`` of each array in the arena of ``slot``;
    ``storage`` is that arena's shared memory, sent until the main process holds it (with the
    slot's first batch, unless that message was discarded).
    """

    worker: int
    slot: int
    layout: list[tuple[str, str, tuple[int, ...], int]]
    storage: torch.Tensor | None = None


class Arena:
    """One slot's shared memory, handed out front to back to the arrays of one batch."""

    def __init__(self, capacity: int, max_rows: int):
        self.max_rows = max_rows
        self.storage = torch.empty(capacity, dtype=torch.uint8).share_memory_()
        self.bytes = self.storage.numpy()
        self.layout: list[tuple[str, str, tuple[int, ...], int]] = []
        self.used = 0

    def reset(self) -> None:
        self.layout = []
        self.used = 0

    def allocate(self, key: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        shape = tuple(map(int, shape))
        offset = _aligned(self.used)
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: np.prod would cost more than the rest
        if offset + nbytes > len(self.bytes) or (shape and shape[0] > self.max_rows):
            raise AssertionError(
                f"batch array {key!r} of shape {shape} does not fit in its shared-memory slot "
                f"(planned for {self.max_rows} rows)"
            )
        self.used = offset + nbytes
        self.layout.append((key, dtype.str, shape, offset))
        return self.bytes[offset : offset + nbytes].view(dtype).reshape(shape)


def capacity_for(arrays: dict[str, np.ndarray], rows: int, max_rows: int) -> int:
    """Bytes an arena needs for ``max_rows`` rows of arrays like ``arrays`` (which have ``rows``)."""
    per_row = sum(array.nbytes // max(rows, 1) for array in arrays.values())
    return _aligned(per_row * max_rows + ALIGN * (len(arrays) + 1))


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


class BatchHandoff:
    """Shared state of a loader's workers and the main process (see the module docstring).

    Create it in the main process before the workers start and give it to them with the
    dataset. Before every epoch the main process calls :meth:`begin_epoch` (the workers read
    the epoch's settings with :meth:`epoch_settings`, so persistent workers follow along), and
    :meth:`reclaim` once the workers have acknowledged it. Each worker builds its batches
    through :meth:`publish`; the main process turns the messages back into batches with
    :meth:`receive`, and calls :meth:`stop` when it stops reading an epoch.

    ``slots`` must exceed the batches a worker may have in flight (sent, not yet received) by
    ``lend`` + 1, so that a worker never waits on the consumer.
    """

    def __init__(self, num_workers: int, slots: int, max_rows: int, lend: int = LEND):
        if slots < lend + 2:
            raise ValueError(f"a worker lending {lend} shared-memory slots needs at least {lend + 2} of them")
        self.slots = slots
        self.max_rows = max_rows
        self.lend = lend
        # busy[w, s]: slot s of worker w holds a batch the main process has not released yet,
        # built in epoch generation[w, s]; mapped[w, s]: the main process holds that slot's memory
        self.busy = torch.zeros((num_workers, slots), dtype=torch.uint8).share_memory_()
        self.generation = torch.zeros((num_workers, slots), dtype=torch.int64).share_memory_()
        self.mapped = torch.zeros((num_workers, slots), dtype=torch.uint8).share_memory_()
        # [generation, epoch, batches to skip] of the current epoch; the generation counts epochs
        self.control = torch.zeros(3, dtype=torch.int64).share_memory_()
        self.stopped = torch.full((1,), -1, dtype=torch.int64).share_memory_()  # last generation stopped
        self._views: dict[tuple[int, int], np.ndarray] = {}  # main process: arenas by (worker, slot)
        self._lent: list[set[int]] = [set() for _ in range(num_workers)]  # main process: slots lent
        self._arenas: list[Arena | None] = []  # worker: its arenas by slot, each made when first used
        self._capacity = 0  # worker: bytes per arena, from its first batch
        self._generation = 0  # worker: that of the epoch it builds batches of

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_views"] = {}
        state["_lent"] = []
        state["_arenas"] = []
        state["_capacity"] = 0
        state["_generation"] = 0
        return state

    # -- main-process side ------------------------------------------------------------------
    def begin_epoch(self, epoch: int, resume_after: int = 0) -> None:
        """Announce the next epoch (its number and the batches to skip) to the workers."""
        control = self.control.numpy()
        control[1:] = epoch, resume_after
        control[0] += 1

    def reclaim(self) -> None:
        """Free the slots of batches of earlier epochs that were never received (an epoch the
        main process stopped reading early: the DataLoader discards what was still on the way).
        Call it once the workers have acknowledged the new epoch, before its first batch."""
        busy, generation, mapped = self.busy.numpy(), self.generation.numpy(), self.mapped.numpy()
        current = int(self.control[0])
        for worker, lent in enumerate(self._lent):
            for slot in range(self.slots):
                # busy first: a worker writes a slot's generation before marking it busy
                if busy[worker, slot] and generation[worker, slot] < current and slot not in lent:
                    if (worker, slot) not in self._views:
                        mapped[worker, slot] = 0  # its memory was in a discarded message: resend it
                    busy[worker, slot] = 0

    def receive(self, message: SharedBatch) -> dict[str, torch.Tensor]:
        """The batch of ``message`` as a flat dict of tensors: views of its slot, which stays
        lent until they are all freed, or copies when ``lend`` slots of the worker are lent."""
        key = (message.worker, message.slot)
        if message.storage is not None:
            self._views[key] = message.storage.numpy()
            self.mapped.numpy()[key] = 1
        memory = self._views[key]
        lent = self._lent[message.worker]
        if len(lent) < self.lend:
            end = max((offset + _nbytes(dt, shape) for _, dt, shape, offset in message.layout), default=0)
            # torch holds this numpy view until the memory of every tensor made from it is freed
            holder = memory[: _aligned(end)]  # whole cache lines: a length every dtype divides
            block = torch.from_numpy(holder)
            lent.add(message.slot)
            weakref.finalize(holder, self._release, message.worker, message.slot)
            return _tensor_views(block, message.layout)
        arrays = {
            name: torch.from_numpy(
                memory[offset : offset + _nbytes(dtype, shape)].view(dtype).reshape(shape).copy()
            )
            for name, dtype, shape, offset in message.layout
        }
        self.busy.numpy()[key] = 0
        return arrays

    def _release(self, worker: int, slot: int) -> None:
        """The last tensor lent from ``slot`` was freed (possibly in another thread)."""
        self._lent[worker].discard(slot)
        self.busy.numpy()[worker, slot] = 0

    def stop(self) -> None:
        """The main process stops reading this epoch: workers still building one of its batches
        build it outside the slots (it is discarded) instead of waiting for a slot."""
        self.stopped[0] = self.control[0]

    # -- worker side ------------------------------------------------------------------------
    def epoch_settings(self) -> tuple[int, int]:
        """In a worker starting an epoch: its number and the batches to skip, as announced."""
        generation, epoch, resume_after = self.control.tolist()
        self._generation = generation
        return epoch, resume_after

    def publish(self, worker: int, build: Callable[[Callable], dict[str, np.ndarray]]) -> SharedBatch:
        """Build the next batch of ``worker`` in a free slot; the message to send for it.

        ``build(allocate)`` must create every array of the batch with ``allocate(key, shape,
        dtype)`` and return them as a flat dict.
        """
        slot = self._free_slot(worker)
        if slot is None:  # the main process stopped reading: build nowhere it could see
            build(_plain_allocate)
            return SharedBatch(worker, -1, [])
        if not self._arenas:
            self._arenas = [None] * self.slots
        arena = self._arenas[slot]
        if arena is not None:
            arena.reset()
            build(arena.allocate)
        elif self._capacity:
            arena = self._arenas[slot] = Arena(self._capacity, self.max_rows)
            build(arena.allocate)
        else:  # the first batch: its arrays tell how large an arena must be
            arrays = build(_plain_allocate)
            rows = len(next(iter(arrays.values())))
            self._capacity = capacity_for(arrays, rows, self.max_rows)
            arena = self._arenas[slot] = Arena(self._capacity, self.max_rows)
            for key, array in arrays.items():
                np.copyto(arena.allocate(key, array.shape, array.dtype), array)
        storage = None if self.mapped.numpy()[worker, slot] else arena.storage
        self.generation.numpy()[worker, slot] = self._generation
        self.busy.numpy()[worker, slot] = 1
        return SharedBatch(worker, slot, list(arena.layout), storage)

    def _free_slot(self, worker: int) -> int | None:
        """The lowest-numbered slot of ``worker`` that holds no batch; waits while there is
        none. None once the main process has stopped reading this epoch (a lent slot must never
        be written while the consumer may hold its batch)."""
        busy = self.busy.numpy()[worker]
        stopped = self.stopped.numpy()
        while True:
            if stopped[0] >= self._generation:
                return None
            free = np.flatnonzero(busy == 0)
            if len(free):
                return int(free[0])
            time.sleep(POLL_SECONDS)


def _tensor_views(block: torch.Tensor, layout) -> dict[str, torch.Tensor]:
    """The arrays of ``layout`` as tensors that view ``block`` (bytes, from the arena's start).

    The block is reinterpreted once per dtype, and each array is one strided view of that,
    instead of slicing, reinterpreting and reshaping every array on its own: this runs in the
    main process for every batch.
    """
    typed: dict[str, torch.Tensor] = {}
    views = {}
    for name, dtype, shape, offset in layout:
        as_dtype = typed.get(dtype)
        if as_dtype is None:
            as_dtype = typed[dtype] = block.view(_torch_dtype(dtype))
        strides = [1] * len(shape)
        for axis in range(len(shape) - 2, -1, -1):
            strides[axis] = strides[axis + 1] * shape[axis + 1]
        views[name] = as_dtype.as_strided(shape, strides, offset // as_dtype.element_size())
    return views


def _nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize


_TORCH_DTYPES: dict[str, torch.dtype] = {}


def _torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a numpy dtype string (as ``torch.from_numpy`` would make it)."""
    found = _TORCH_DTYPES.get(dtype)
    if found is None:
        found = _TORCH_DTYPES[dtype] = torch.from_numpy(np.empty(0, dtype)).dtype
    return found


def _plain_allocate(key: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.empty(shape, dtype)
