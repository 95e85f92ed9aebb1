"""Entries (boxes) of many groups (events, or events and classes) laid out as padded
``(groups, max entries per group, ...)`` tensors, so that NMS and matching run for all groups at
once with a loop over the rank within a group only, in chunks of groups to bound the memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch


class Layout(NamedTuple):
    """``order``: the entries sorted by group, then by decreasing score (ties: lower index first),
    then by index; ``group`` and ``position`` (rank in its group) of each sorted entry; ``counts``
    and ``starts`` (offset in the sorted order) of each group."""

    order: torch.Tensor
    group: torch.Tensor
    position: torch.Tensor
    counts: torch.Tensor
    starts: torch.Tensor


def group_keys(event: torch.Tensor, classes: torch.Tensor | None, n_classes: int) -> torch.Tensor:
    """One int64 key per entry: the event, or ``event * n_classes + class`` when classes are given."""
    event = event.long()
    return event if classes is None else event * n_classes + classes.long()


def layout(group: torch.Tensor, n_groups: int, score: torch.Tensor | None = None) -> Layout:
    """The :class:`Layout` of entries of groups ``group`` (int64 in ``[0, n_groups)``)."""
    n = group.numel()
    index = torch.arange(n, device=group.device)
    order = index if score is None else torch.sort(score, descending=True, stable=True).indices
    order = order[torch.sort(group[order], stable=True).indices]
    sorted_group = group[order]
    counts = torch.bincount(sorted_group, minlength=n_groups)
    starts = torch.cumsum(counts, 0) - counts
    return Layout(order, sorted_group, index - starts[sorted_group], counts, starts)


def chunks(n_groups: int, size: int) -> Iterator[tuple[int, int]]:
    """``(first, end)`` group ranges of at most ``size`` groups."""
    for first in range(0, n_groups, size):
        yield first, min(first + size, n_groups)


def entry_range(lay: Layout, first: int, end: int) -> tuple[int, int]:
    """The slice of the sorted order that holds the entries of groups ``[first, end)``."""
    start = int(lay.starts[first])
    stop = int(lay.starts[end - 1] + lay.counts[end - 1])
    return start, stop


def padded(values: torch.Tensor, lay: Layout, first: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``values`` (per entry, in the original order) of groups ``[first, end)`` as
    ``(end - first, width, ...)`` zero-padded, with the ``(end - first, width)`` mask of real entries."""
    start, stop = entry_range(lay, first, end)
    width = int(lay.counts[first:end].max()) if end > first else 0
    rows = lay.group[start:stop] - first
    cols = lay.position[start:stop]
    out = torch.zeros((end - first, width, *values.shape[1:]), dtype=values.dtype, device=values.device)
    out[rows, cols] = values[lay.order[start:stop]]
    valid = torch.zeros((end - first, width), dtype=torch.bool, device=values.device)
    valid[rows, cols] = True
    return out, valid
