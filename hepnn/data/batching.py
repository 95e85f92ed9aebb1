"""Assembling a batch of torch tensors from rows of preprocessed chunks.

Jagged groups are padded, clipped to length, standardised and clipped in value in one compiled
pass (numba) that writes every output element exactly once: ``(B, C, length)`` float32 plus a
``(B, length)`` boolean mask. Per-entry columns are gathered with numpy fancy indexing.
Batches are built as numpy arrays, in memory the caller may provide (DataLoader workers build
them in shared memory, see :mod:`hepnn.data.loading.handoff`); :func:`nest_observers` and
:func:`to_torch` make them the dict of tensors the tasks receive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from hepnn.data.loading.kernels import fill_padded
from hepnn.data.preprocess import OBSERVER_PREFIX, ChunkData, JaggedColumns
from hepnn.data.spec import DataSpec, InputGroup

Allocator = Callable[[str, tuple, np.dtype], np.ndarray] | None


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
            data.values,  # float32, contiguous (JaggedColumns)
            np.ascontiguousarray(data.offsets, dtype=np.int64),
            np.ascontiguousarray(rows, dtype=np.int64),
            self.center,
            self.inv_scale,
            self.low,
            self.high,
            np.float32(self.group.pad_value),
            bool(self.reverse),
        )


class ImageLayout:
    """Pixelises the preprocessed elements of an image group (see :mod:`hepnn.data.images`)."""

    def __init__(self, group: InputGroup):
        from hepnn.data.images import ImageGrid

        image = group.image
        self.group = group
        self.image = image
        self.grid = ImageGrid(image.n_eta, image.n_phi, image.eta_range, image.phi_range)
        self.shape = (len(image.channels), image.n_eta, image.n_phi)

    def fill(self, out: np.ndarray, data: JaggedColumns, rows: np.ndarray) -> None:
        from hepnn.data.images import pixelize

        elements, offsets = data.elements(rows)
        eta, phi, intensity, channel = elements
        pixelize(eta, phi, intensity, channel.astype(np.int64), offsets, self.grid, self.shape[0], out=out)

    def finish(self, images: np.ndarray, rng: np.random.Generator | None) -> None:
        """Normalise; with ``rng`` (training batches), apply the configured random flips."""
        from hepnn.data.images import normalize_images, random_flips

        if self.image.normalize:
            normalize_images(images)
        if rng is not None and (self.image.augment_flip_eta or self.image.augment_flip_phi):
            random_flips(
                images, rng, flip_eta=self.image.augment_flip_eta, flip_phi=self.image.augment_flip_phi
            )


class BatchBuilder:
    """Builds the batches (dicts of numpy arrays) of a spec from rows of preprocessed chunks."""

    def __init__(self, spec: DataSpec):
        self.layouts = [GroupLayout(g) for g in spec.inputs if g.jagged]
        self.images = [ImageLayout(g) for g in spec.inputs if g.image is not None]

    def build(
        self,
        parts: Sequence[tuple[ChunkData, np.ndarray]],
        allocate: Allocator = None,
        augment: np.random.Generator | None = None,
    ) -> dict:
        """The batch made of ``rows`` of each ``(chunk, rows)`` part, in that order, as a flat dict
        of numpy arrays: padded jagged groups with their masks, and the per-entry columns
        (observers under ``observers/<name>``; :func:`nest_observers` makes them a dict).

        ``allocate(key, shape, dtype)`` creates each output array (default: ``np.empty``), so a
        DataLoader worker can build the batch directly in shared memory. ``augment``: the random
        generator of training-time augmentation (image flips); None for none.
        """
        allocate = allocate or _allocate_empty
        sizes = [len(rows) for _, rows in parts]
        starts = np.cumsum([0, *sizes])
        batch: dict[str, np.ndarray] = {}
        for layout in self.layouts:
            group = layout.group
            out = allocate(group.name, (starts[-1], len(group.features), group.length), np.float32)
            mask = allocate(group.mask_key, (starts[-1], group.length), np.bool_)
            for (data, rows), start, stop in zip(parts, starts[:-1], starts[1:], strict=True):
                dest = np.arange(start, stop, dtype=np.int64)
                layout.fill(out, mask, dest, data.jagged[group.name], rows)
            batch[group.name] = out
            batch[group.mask_key] = mask
        for layout in self.images:
            images = allocate(layout.group.name, (starts[-1], *layout.shape), np.float32)
            for (data, rows), start, stop in zip(parts, starts[:-1], starts[1:], strict=True):
                layout.fill(images[start:stop], data.jagged[layout.group.name], rows)
            layout.finish(images, augment)
            batch[layout.group.name] = images
        for key, first in parts[0][0].columns.items():
            out = allocate(key, (starts[-1], *first.shape[1:]), first.dtype)
            np.concatenate([data.columns[key][rows] for data, rows in parts], out=out)
            batch[key] = out
        return batch


def _allocate_empty(key: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.empty(shape, dtype)


def nest_observers(batch: dict) -> dict:
    """The flat batch with its ``observers/<name>`` columns moved to ``batch["observers"]``."""
    nested: dict = {}
    observers = {}
    for key, values in batch.items():
        if key.startswith(OBSERVER_PREFIX):
            observers[key.removeprefix(OBSERVER_PREFIX)] = values
        else:
            nested[key] = values
    if observers:
        nested["observers"] = observers
    return nested


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
