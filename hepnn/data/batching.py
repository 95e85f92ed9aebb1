"""Assembling a batch of torch tensors from rows of preprocessed chunks.

Jagged groups are padded, clipped to length, standardised and clipped in value in one compiled
pass (numba) that writes every output element exactly once: ``(B, C, length)`` float32 plus a
``(B, length)`` boolean mask. Per-entry columns are gathered with numpy fancy indexing.
Observers come out as the nested dict ``batch["observers"]``. Batches are built as numpy arrays:
DataLoader workers send them through a pipe in one piece, which costs less than sharing each
torch tensor's memory separately; :func:`to_torch` turns them into tensors in the main process
(see :class:`hepnn.data.loader.BatchLoader`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hepnn.data.kernels import fill_padded, gather_segments
from hepnn.data.preprocess import OBSERVER_PREFIX, ChunkData, JaggedColumns
from hepnn.data.spec import DataSpec, InputGroup


class GroupLayout:
    """Per-channel constants of a jagged group, as arrays the compiled fill expects."""

    def __init__(self, group: InputGroup):
        features = group.features
        if any(f.automatic for f in features):
            raise ValueError(f"data.inputs.{group.name}: automatic standardisation not resolved yet")
        self.group = group
        self.center = np.array([f.center for f in features], dtype=np.float32)
        self.inv_scale = np.array([1.0 / f.scale for f in features], dtype=np.float32)
        self.low = np.array([f.clip[0] if f.clip else -np.inf for f in features], dtype=np.float32)
        self.high = np.array([f.clip[1] if f.clip else np.inf for f in features], dtype=np.float32)
        self.reverse = group.order is not None and not group.order.descending

    def fill(
        self, out: np.ndarray, mask: np.ndarray, dest: np.ndarray, data: JaggedColumns, rows: np.ndarray
    ):
        fill_padded(
            out,
            mask,
            np.ascontiguousarray(dest, dtype=np.int64),
            np.ascontiguousarray(data.values, dtype=np.float32),
            np.ascontiguousarray(data.offsets, dtype=np.int64),
            np.ascontiguousarray(rows, dtype=np.int64),
            self.center,
            self.inv_scale,
            self.low,
            self.high,
            np.float32(self.group.pad_value),
            bool(self.reverse),
        )


def gather_rows(data: JaggedColumns, rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The elements of entries ``rows`` (at most the first ``length`` of each), with their counts."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    counts = np.minimum(data.offsets[rows + 1] - data.offsets[rows], length)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    out = np.empty((offsets[-1], data.values.shape[1]), dtype=np.float32)
    gather_segments(np.ascontiguousarray(data.values, dtype=np.float32), data.offsets, rows, out, offsets)
    return out, counts


class BatchBuilder:
    """Builds batches (dicts of numpy arrays) for a spec, in two steps.

    :meth:`gather` collects the chosen entries in the compact form (a :class:`ChunkData`: jagged
    groups as flat element arrays, at most ``length`` elements per entry); :meth:`pad` turns
    that into the padded, standardised arrays. DataLoader workers send the compact form, about a
    third of the padded size, and the loader pads in the main process (see
    :class:`hepnn.data.loader.BatchLoader`).
    """

    def __init__(self, spec: DataSpec):
        self.layouts = [GroupLayout(g) for g in spec.inputs if g.jagged]

    def gather(self, parts: Sequence[tuple[ChunkData, np.ndarray]]) -> ChunkData:
        """The entries ``rows`` of each ``(chunk, rows)`` part, in that order, in compact form."""
        jagged = {}
        for layout in self.layouts:
            name = layout.group.name
            pieces = [gather_rows(data.jagged[name], rows, layout.group.length) for data, rows in parts]
            counts = np.concatenate([c for _, c in pieces])
            offsets = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            values = np.concatenate([v for v, _ in pieces]) if len(pieces) > 1 else pieces[0][0]
            jagged[name] = JaggedColumns(values, offsets)
        columns = {
            key: np.concatenate([data.columns[key][rows] for data, rows in parts])
            for key in parts[0][0].columns
        }
        return ChunkData(jagged, columns)

    def pad(self, compact: ChunkData) -> dict:
        """The padded batch of all entries of a compact batch (from :meth:`gather`)."""
        return self.build([(compact, np.arange(len(compact), dtype=np.int64))])

    def build(self, parts: Sequence[tuple[ChunkData, np.ndarray]]) -> dict:
        """The batch of numpy arrays made of ``rows`` of each ``(chunk, rows)`` part, in that order:
        padded jagged groups with their masks, per-entry columns, and ``observers`` as a dict."""
        sizes = [len(rows) for _, rows in parts]
        starts = np.cumsum([0, *sizes])
        batch: dict = {}
        for layout in self.layouts:
            group = layout.group
            out = np.empty((starts[-1], len(group.features), group.length), np.float32)
            mask = np.empty((starts[-1], group.length), bool)
            for (data, rows), start, stop in zip(parts, starts[:-1], starts[1:], strict=True):
                dest = np.arange(start, stop, dtype=np.int64)
                layout.fill(out, mask, dest, data.jagged[group.name], rows)
            batch[group.name] = out
            batch[group.mask_key] = mask
        observers = {}
        for key, values in self._columns(parts).items():
            if key.startswith(OBSERVER_PREFIX):
                observers[key.removeprefix(OBSERVER_PREFIX)] = values
            else:
                batch[key] = values
        if observers:
            batch["observers"] = observers
        return batch

    @staticmethod
    def _columns(parts) -> dict[str, np.ndarray]:
        return {
            key: np.concatenate([data.columns[key][rows] for data, rows in parts])
            for key in parts[0][0].columns
        }


def to_torch(batch: dict, pin_memory: bool = False) -> dict:
    """The batch with every numpy array as a torch tensor (sharing memory; pinned if asked)."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, dict):
            out[key] = to_torch(value, pin_memory)
        else:
            tensor = torch.from_numpy(value) if isinstance(value, np.ndarray) else value
            out[key] = tensor.pin_memory() if pin_memory else tensor
    return out
