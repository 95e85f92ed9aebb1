"""Handing finished batches from DataLoader workers to the main process through shared memory.

A plain DataLoader pickles every batch through a pipe, or moves each tensor's memory to a new
shared-memory segment; either costs the main process about as much as building the batch. Here
each worker owns a ring of ``slots`` shared-memory arenas, allocated once per epoch, and builds
each batch directly in the next free arena. Through the pipe goes only a small
:class:`SharedBatch` message (worker, slot, where each array lies; the arena's memory itself only
the first time a slot is used). The main process copies the arrays out, one ``memcpy`` each, and
marks the slot free again; a worker about to reuse a slot waits until the main process has
copied what it held.

The copy makes every batch the consumer receives its own memory: Lightning keeps a batch alive
while it fetches the next one, and users may keep batches, so slots are never lent out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

ALIGN = 64  # bytes; every array in an arena starts on a cache line
POLL_SECONDS = 1e-4


@dataclass
class SharedBatch:
    """The message a worker sends for one batch built in shared memory.

    ``layout`` lists ``(key, dtype, shape, byte offset)`` of each array in the arena of
    ``slot``; ``storage`` is that arena's shared memory, sent only with the slot's first batch.
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
        offset = -(-self.used // ALIGN) * ALIGN
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: np.prod costs more than the rest
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
    return per_row * max_rows + ALIGN * (len(arrays) + 1)


class BatchHandoff:
    """Shared state of one epoch's workers and the main process (see the module docstring).

    Create it in the main process, give it to the workers with the dataset, and have each
    worker build its batches through :meth:`publish`; the main process turns the messages back
    into batches with :meth:`receive`, and calls :meth:`stop` before it shuts the workers down.
    """

    def __init__(self, num_workers: int, slots: int, max_rows: int):
        if slots < 2:
            raise ValueError("a shared-memory ring needs at least two slots")
        self.slots = slots
        self.max_rows = max_rows
        # consumed[w]: batches of worker w copied out by the main process; consumed[-1] = 1: stop
        self.consumed = torch.zeros(num_workers + 1, dtype=torch.int64).share_memory_()
        self._views: dict[tuple[int, int], np.ndarray] = {}  # main process: arenas by (worker, slot)
        self._arenas: list[Arena] = []  # worker: its ring
        self._published = 0

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_views"] = {}
        state["_arenas"] = []
        state["_published"] = 0
        return state

    # -- worker side ------------------------------------------------------------------------
    def publish(self, worker: int, build: Callable[[Callable], dict[str, np.ndarray]]) -> SharedBatch:
        """Build the next batch of ``worker`` in its next free slot; the message to send for it.

        ``build(allocate)`` must create every array of the batch with ``allocate(key, shape,
        dtype)`` and return them as a flat dict.
        """
        number = self._published
        slot = number % self.slots
        self._wait_until_consumed(worker, number - self.slots + 1)
        storage = None
        if not self._arenas:
            arrays = build(_plain_allocate)
            rows = len(next(iter(arrays.values())))
            capacity = capacity_for(arrays, rows, self.max_rows)
            self._arenas = [Arena(capacity, self.max_rows) for _ in range(self.slots)]
            arena = self._arenas[slot]
            for key, array in arrays.items():
                np.copyto(arena.allocate(key, array.shape, array.dtype), array)
        else:
            arena = self._arenas[slot]
            arena.reset()
            build(arena.allocate)
        if number < self.slots:
            storage = arena.storage
        self._published += 1
        return SharedBatch(worker, slot, list(arena.layout), storage)

    def _wait_until_consumed(self, worker: int, count: int) -> None:
        consumed = self.consumed.numpy()
        while consumed[worker] < count and not consumed[-1]:
            time.sleep(POLL_SECONDS)

    # -- main-process side ------------------------------------------------------------------
    def receive(self, message: SharedBatch) -> dict[str, np.ndarray]:
        """The batch of ``message`` as a flat dict of numpy arrays in this process's own memory;
        the slot is free for its worker again when this returns."""
        key = (message.worker, message.slot)
        if message.storage is not None:
            self._views[key] = message.storage.numpy()
        memory = self._views[key]
        arrays = {}
        for name, dtype, shape, offset in message.layout:
            dtype = np.dtype(dtype)
            nbytes = math.prod(shape) * dtype.itemsize
            arrays[name] = memory[offset : offset + nbytes].view(dtype).reshape(shape).copy()
        self.consumed.numpy()[message.worker] += 1
        return arrays

    def stop(self) -> None:
        """Release every worker waiting for a slot (the main process stops reading)."""
        self.consumed[-1] = 1
        self._views.clear()


def _plain_allocate(key: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.empty(shape, dtype)
