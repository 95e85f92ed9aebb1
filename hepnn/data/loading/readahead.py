"""Reading the next pieces of an epoch in a background thread while batches are built.

A worker (or the training process itself, without workers) spends its time in two stages:
reading and preprocessing a piece of a ROOT file (decompression, the jagged features), and
building padded batches from the pieces read so far. Both stages run mostly outside the GIL
(decompression, numpy's loops on whole arrays and the numba kernels release it), so a second
thread that reads ahead lets them overlap on separate cores: while batches are built from piece
``k``, piece ``k + 1`` is read. Without workers this also overlaps reading with the training
step. The overlap needs a core that is idle meanwhile (e.g. while a training process waits on
its GPU): where every core is busy the two threads only take turns, hence ``data.read_ahead: 0``
by default.

:class:`ReadAhead` keeps at most ``depth`` pieces loaded beyond the newest one asked for, so the
memory bound grows by ``depth`` pieces. Pieces are read in the order they are asked for, one at a
time, by one thread: what reads a file (its open handles, the chunk cache) is only ever used by
that thread. An error while reading is raised where the piece is asked for, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

Piece = TypeVar("Piece")
Loaded = TypeVar("Loaded")


class ReadAhead(Generic[Piece, Loaded]):
    """Load ``pieces[i]`` with ``load`` when :meth:`get` asks for it, and the ``depth`` pieces
    after it ahead of time in a background thread (``depth=0``: load in the calling thread)."""

    def __init__(self, load: Callable[[Piece], Loaded], pieces: Sequence[Piece], depth: int):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"read-ahead depth must be a non-negative integer, got {depth!r}")
        self.load = load
        self.pieces = list(pieces)
        self.depth = depth
        self._pending: dict[int, Future] = {}
        self._next = 0  # the first index never submitted for reading ahead
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="hepnn-read-ahead") if depth else None
        )

    def get(self, index: int) -> Loaded:
        """The loaded ``pieces[index]``; starts reading the ``depth`` pieces after it.

        Each piece is handed out once: asking for it again reads it again.
        """
        if self._executor is None:
            return self.load(self.pieces[index])
        future = self._pending.pop(index, None)
        if future is None:
            future = self._executor.submit(self.load, self.pieces[index])
        self._next = max(self._next, index + 1)
        while self._next <= min(index + self.depth, len(self.pieces) - 1):
            if self._next not in self._pending:
                self._pending[self._next] = self._executor.submit(self.load, self.pieces[self._next])
            self._next += 1
        return future.result()

    def close(self) -> None:
        """Drop the pieces read ahead and stop the thread (after the piece it is reading)."""
        if self._executor is not None:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
