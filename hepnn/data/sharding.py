"""Dealing the selected entries of an epoch across DDP ranks and DataLoader workers.

The chunks of a split, in this epoch's order, are viewed as one sequence of *selected* entries
(the number each chunk keeps after ``data.selection`` is known before the epoch starts). The
sequence is cut into contiguous pieces: first one per global rank (sizes differ by at most one
entry, so multi-node runs read disjoint data), then each rank's piece into one per worker. Every
selected entry belongs to exactly one (rank, worker).

DDP needs every rank to run the same number of training steps, or the ranks deadlock in the
gradient all-reduce at the end of an epoch. :func:`batch_plan` therefore gives every rank the
same number of batches: full batches first, and on ranks that would otherwise have fewer
batches, some of the last ones are split into smaller ones. No entry is dropped or repeated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hepnn.errors import ConfigError


@dataclass(frozen=True)
class Piece:
    """Selected entries ``[first, last)`` (counted after the selection) of ``chunk``."""

    chunk: object
    first: int
    last: int

    @property
    def n_selected(self) -> int:
        return self.last - self.first


def cut(chunks: Sequence, counts: Sequence[int], n_parts: int) -> list[list[Piece]]:
    """Cut the selected-entry sequence of ``chunks`` (``counts[i]`` selected in chunk ``i``) into
    ``n_parts`` contiguous pieces of near-equal size (sizes differ by at most one)."""
    total = sum(counts)
    bounds = [k * total // n_parts for k in range(n_parts + 1)]
    parts: list[list[Piece]] = [[] for _ in range(n_parts)]
    offset = 0
    part = 0
    for chunk, count in zip(chunks, counts, strict=True):
        first = 0
        while first < count:
            while offset + first >= bounds[part + 1]:
                part += 1
            take = min(count - first, bounds[part + 1] - (offset + first))
            parts[part].append(Piece(chunk, first, first + take))
            first += take
        offset += count
    return parts


def deal(chunks: Sequence, counts: Sequence[int], world_size: int, workers: int) -> list[list[list[Piece]]]:
    """``pieces[rank][worker]``: the selected entries each worker of each rank reads this epoch."""
    dealt = []
    for rank_pieces in cut(chunks, counts, world_size):
        by_worker = cut(rank_pieces, [p.n_selected for p in rank_pieces], workers)
        dealt.append(
            [
                [Piece(p.chunk.chunk, p.chunk.first + p.first, p.chunk.first + p.last) for p in w]
                for w in by_worker
            ]
        )
    return dealt


def batch_plan(n_entries: Sequence[Sequence[int]], batch_size: int) -> list[list[list[int]]]:
    """Batch sizes ``sizes[rank][worker]`` with the same total number of batches on every rank.

    ``n_entries[rank][worker]`` is the number of entries of each worker. Raises
    :class:`~hepnn.errors.ConfigError` if a split is too small to give every rank the same number
    of batches (only possible with fewer entries than ranks x workers).
    """
    counts = [[math.ceil(n / batch_size) for n in rank] for rank in n_entries]
    target = max(sum(rank) for rank in counts)
    for rank, (entries, batches) in enumerate(zip(n_entries, counts, strict=True)):
        missing = target - sum(batches)
        for worker in range(len(batches)):
            extra = min(missing, entries[worker] - batches[worker])
            batches[worker] += extra
            missing -= extra
        if missing:
            raise ConfigError(
                f"rank {rank} has {sum(entries)} entries, too few for the {target} batches every rank must "
                f"run; use fewer DataLoader workers (data.num_workers) or devices for this split"
            )
    return [
        [_sizes(n, b, batch_size) for n, b in zip(entries, batches, strict=True)]
        for entries, batches in zip(n_entries, counts, strict=True)
    ]


def batches_before(batches_per_worker: Sequence[int], n: int) -> list[int]:
    """How many of the first ``n`` batches a DataLoader delivers come from each worker.

    A DataLoader over an iterable dataset asks its workers in turn and delivers their batches in
    that order; a worker that has run out drops out of the turn. So the k-th batch of every worker
    comes before the (k+1)-th batch of any. Used to resume an interrupted epoch: each worker skips
    exactly the batches that were already delivered.
    """
    total = sum(batches_per_worker)
    if not 0 <= n <= total:
        raise ValueError(f"cannot skip {n} batches of an epoch of {total}")
    taken = [0] * len(batches_per_worker)
    while n:
        for worker, available in enumerate(batches_per_worker):
            if n and taken[worker] < available:
                taken[worker] += 1
                n -= 1
    return taken


def _sizes(n: int, n_batches: int, batch_size: int) -> list[int]:
    """``n_batches`` sizes summing to ``n``: full batches first, then the smaller rest."""
    sizes = [batch_size] * n_batches
    excess = n_batches * batch_size - n
    for i in range(n_batches - 1, -1, -1):
        take = min(excess, sizes[i] - 1)
        sizes[i] -= take
        excess -= take
    return sizes
