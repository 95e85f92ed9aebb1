"""Vectorised conversion of a chunk of ROOT entries into the arrays batches are cut from.

Input: the awkward record array read for a chunk. Output: a :class:`ChunkData` with one row per
selected entry. Jagged input groups stay jagged but flat: one float32 array of raw feature
values, entry by entry (already in the group's order; :class:`JaggedColumns`), plus offsets,
4-5 times smaller than the padded form; padding, clipping to length and standardisation happen
once, when a batch is assembled (:mod:`hepnn.data.batching`). Per-entry arrays (per-entry input
groups, standardised; ``label``, ``targets``, ``weight``, observers, provenance
``file_index``/``entry``) are plain numpy arrays. All work is whole-array awkward/numpy or
compiled (numba); there is no Python loop over entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import awkward as ak
import numpy as np

from hepnn.data.expressions import ExpressionError, VariableResolver
from hepnn.data.jagged import FlatJagged, as_awkward
from hepnn.data.loading.kernels import block_column, take_blocks
from hepnn.data.spec import DataSpec, InputGroup
from hepnn.errors import InputError

OBSERVER_PREFIX = "observers/"
NONFINITE_COUNT = "nonfinite_replaced"


class DataValueError(InputError):
    """Input values violate what the spec expects (non-finite, not one-hot, wrong shape)."""


@dataclass
class JaggedColumns:
    """Raw feature values of a jagged group, entry by entry.

    ``values`` is flat float32, in blocks: entry ``i``, with ``n = offsets[i + 1] - offsets[i]``
    elements, owns ``values[C * offsets[i]:C * offsets[i + 1]]`` (``C = n_features``), and the
    ``n`` values of feature ``c`` lie at ``c * n`` in its block. An entry is one contiguous block
    (gathering shuffled entries into a batch stays cache-friendly), and each of its features one
    contiguous run (copied into the batch's ``(B, C, length)`` rows with vector instructions).
    """

    values: np.ndarray
    offsets: np.ndarray
    n_features: int

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_columns(
        cls, columns: Sequence[np.ndarray], offsets: np.ndarray
    ) -> tuple[JaggedColumns, list[int]]:
        """The blocks of ``columns`` (one array per feature, its values for all elements, entry
        after entry), and how many values of each are NaN or inf."""
        n_features = len(columns)
        values = np.empty(n_features * int(offsets[-1]), dtype=np.float32)
        bad = [
            block_column(np.ascontiguousarray(column, dtype=np.float32), offsets, c, n_features, values)
            for c, column in enumerate(columns)
        ]
        return cls(values, offsets, n_features), bad

    def replace_feature(self, c: int, column: np.ndarray) -> None:
        """Overwrite feature ``c`` of every element with ``column`` (in element order)."""
        block_column(
            np.ascontiguousarray(column, dtype=np.float32), self.offsets, c, self.n_features, self.values
        )

    def select(self, start: int, stop: int) -> JaggedColumns:
        """Entries ``start:stop``, sharing memory (their blocks are contiguous)."""
        offsets = self.offsets[start : stop + 1]
        first, last = int(offsets[0]), int(offsets[-1])
        return JaggedColumns(
            self.values[self.n_features * first : self.n_features * last], offsets - first, self.n_features
        )

    @classmethod
    def gather(cls, parts: Sequence[tuple[JaggedColumns, np.ndarray]]) -> JaggedColumns:
        """A copy of entries ``rows`` of each ``(group, rows)`` part, one part after the other."""
        n_features = parts[0][0].n_features
        counts = [group.offsets[rows + 1] - group.offsets[rows] for group, rows in parts]
        offsets = np.zeros(sum(len(c) for c in counts) + 1, dtype=np.int64)
        np.cumsum(np.concatenate(counts), out=offsets[1:])
        values = np.empty(n_features * int(offsets[-1]), dtype=np.float32)
        position = 0
        for group, rows in parts:
            rows = np.ascontiguousarray(rows, dtype=np.int64)
            offsets_in = np.ascontiguousarray(group.offsets, dtype=np.int64)
            position += take_blocks(group.values, offsets_in, rows, n_features, values[position:])
        return cls(values, offsets, n_features)

    def elements(self, rows: np.ndarray, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(C, k)`` features of the elements of entries ``rows`` (in that order; their first
        ``limit`` elements), with offsets of the ``k`` elements by row."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = self.offsets[rows + 1] - self.offsets[rows]
        kept = counts if limit is None else np.minimum(counts, limit)
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(kept, out=offsets[1:])
        position = np.arange(offsets[-1], dtype=np.int64) + np.repeat(
            self.n_features * self.offsets[rows] - offsets[:-1], kept
        )
        run = np.repeat(counts, kept)  # each element's feature c lies c * (its entry's count) further
        out = np.empty((self.n_features, len(position)), dtype=self.values.dtype)
        for c in range(self.n_features):
            out[c] = self.values[position + c * run]
        return out, offsets


@dataclass
class ChunkData:
    """The preprocessed entries of one chunk (after the selection).

    ``mapped``: the arrays are read-only memory maps of the chunk cache (:mod:`hepnn.data.cache`),
    not memory of this process's heap.
    """

    jagged: dict[str, JaggedColumns] = field(default_factory=dict)
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    mapped: bool = False

    def __len__(self) -> int:
        return len(self.columns["entry"])

    def select(self, rows: slice) -> ChunkData:
        """The entries ``rows`` (a slice) of this chunk, sharing memory where possible."""
        jagged = {name: group.select(rows.start, rows.stop) for name, group in self.jagged.items()}
        return ChunkData(jagged, {k: v[rows] for k, v in self.columns.items()}, self.mapped)

    @classmethod
    def gather(cls, parts: Sequence[tuple[ChunkData, np.ndarray]]) -> ChunkData:
        """A copy of entries ``rows`` of each ``(chunk, rows)`` part, one part after the other."""
        first = parts[0][0]
        jagged = {
            name: JaggedColumns.gather([(data.jagged[name], rows) for data, rows in parts])
            for name in first.jagged
        }
        columns = {
            key: np.concatenate([data.columns[key][rows] for data, rows in parts]) for key in first.columns
        }
        return cls(jagged, columns)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat name -> array mapping (for ``np.savez``); :meth:`from_arrays` inverts it."""
        out = {f"col:{k}": v for k, v in self.columns.items()}
        for name, group in self.jagged.items():
            out[f"jag:{name}:values"] = group.values
            out[f"jag:{name}:offsets"] = group.offsets
            out[f"jag:{name}:features"] = np.array([group.n_features], dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays, mapped: bool = False) -> ChunkData:
        data = cls(mapped=mapped)
        for key in arrays:
            kind, _, rest = key.partition(":")
            if kind == "col":
                data.columns[rest] = arrays[key]
            elif rest.endswith(":values"):
                name = rest.removesuffix(":values")
                features = int(arrays[f"jag:{name}:features"][0])
                data.jagged[name] = JaggedColumns(arrays[key], arrays[f"jag:{name}:offsets"], features)
        return data


def _is_jagged(values) -> bool:
    return isinstance(values, FlatJagged) or (isinstance(values, ak.Array) and values.ndim == 2)


def per_entry_values(values, n: int, where: str) -> np.ndarray:
    """``values`` as ``n`` numbers, one per entry (a scalar is broadcast); DataValueError naming ``where``
    for a list per entry or another shape."""
    if _is_jagged(values) or (isinstance(values, ak.Array) and values.ndim != 1):
        raise DataValueError(f"{where} has one value per element of a list; one value per entry is expected")
    if isinstance(values, ak.Array):
        values = ak.to_numpy(values)
    array = np.asarray(values)
    if array.ndim == 0:
        array = np.full(n, array)
    if array.shape != (n,):
        raise DataValueError(f"{where} has shape {array.shape}, expected ({n},)")
    return array


def _entries_text(rows: np.ndarray, entries: np.ndarray) -> str:
    return f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}, first at entry {int(entries[rows[0]])}"


class _NonFinite:
    """Applies the spec's NaN/inf policy and counts replacements per entry."""

    def __init__(self, spec: DataSpec, entries: np.ndarray):
        self.replace = spec.nonfinite == "replace"
        self.value = np.float32(spec.nonfinite_value)
        self.entries = entries
        self.count = np.zeros(len(entries), dtype=np.int32)

    def __call__(self, values: np.ndarray, row_of: np.ndarray | None, where: str) -> np.ndarray:
        """Check ``values``: per entry, per element with ``row_of`` its entry row, or ``(N, ...)``
        arrays of several values per entry (``row_of`` None)."""
        bad = ~np.isfinite(values)
        if not bad.any():
            return values
        if row_of is not None:
            rows = row_of[np.flatnonzero(bad)]
        else:
            rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))
            rows = np.repeat(rows, bad.reshape(len(values), -1)[rows].sum(axis=1))
        if not self.replace:
            raise DataValueError(
                f"{where}: {int(bad.sum())} non-finite value(s) (NaN or inf) in "
                f"{_entries_text(np.unique(rows), self.entries)}; set data.nonfinite=replace to "
                f"replace them by data.nonfinite_value and count them"
            )
        self.count += np.bincount(rows, minlength=len(self.count)).astype(np.int32)
        return np.where(bad, self.value, values)


def _flat(values) -> tuple[np.ndarray, np.ndarray]:
    """Flat content and per-entry counts of a list-per-entry array."""
    if isinstance(values, FlatJagged):
        return values.content, values.counts
    counts = ak.to_numpy(ak.num(values, axis=1)).astype(np.int64)
    return ak.to_numpy(ak.flatten(values, axis=1)), counts


def build_jagged_group(
    group: InputGroup, resolve, entries: np.ndarray, source: str, nonfinite
) -> JaggedColumns:
    """Raw feature values of a jagged group in its order, with offsets; checks lengths and values."""
    where = f"{source}: data.inputs.{group.name}"
    counts = None
    permutation = None
    if group.order is not None:
        key = as_awkward(resolve(group.order.by))
        if not _is_jagged(key):
            raise DataValueError(f"{where}.order.by: '{group.order.by}' must have one value per element")
        counts = ak.to_numpy(ak.num(key, axis=1)).astype(np.int64)
        local = ak.flatten(ak.argsort(key, axis=1, ascending=False, stable=True), axis=1)
        permutation = ak.to_numpy(local).astype(np.int64) + np.repeat(np.cumsum(counts) - counts, counts)
    columns = []
    names = []
    for feature in group.features:
        fwhere = f"{where}.features.{feature.name}"
        values = resolve(feature.name)
        if not _is_jagged(values):
            raise DataValueError(
                f"{fwhere} has one value per entry, but group '{group.name}' has length "
                f"{group.length} and needs a list per entry (e.g. one value per particle)"
            )
        flat, these_counts = _flat(values)
        if counts is None:
            counts = these_counts
        elif not np.array_equal(counts, these_counts):
            first = group.order.by if group.order and not columns else group.features[0].name
            raise DataValueError(f"{fwhere}: list lengths differ from those of '{first}' in the same group")
        columns.append(np.ascontiguousarray(flat, dtype=np.float32))
        names.append(fwhere)
    if permutation is not None:
        columns = [column[permutation] for column in columns]  # elements stay in their entry
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    jagged, bad = JaggedColumns.from_columns(columns, offsets)
    if any(bad):
        rows_of = np.repeat(np.arange(len(counts)), counts)
        for c, fwhere in enumerate(names):
            if bad[c]:  # raises, or replaces and counts
                jagged.replace_feature(c, nonfinite(columns[c], rows_of, fwhere))
    if group.on_empty == "error":
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            raise DataValueError(
                f"{where}: empty list in {_entries_text(empty, entries)} "
                f"(data.inputs.{group.name}.on_empty=error)"
            )
    return jagged


IMAGE_COLUMNS = ("eta", "phi", "intensity", "channel")  # the columns of an image group's elements


def build_image_elements(
    group: InputGroup, resolve, entries: np.ndarray, source: str, nonfinite
) -> JaggedColumns:
    """The elements of an image group, all channels of an entry together, in the jet frame.

    Values ``(n_elements, 4)``: eta and phi after the group's preprocessing (translation,
    rotation, flips of :func:`hepnn.data.images.jet_frame`, computed from all channels), the
    intensity and the channel index. Pixelising happens when a batch is built.
    """
    from hepnn.data.images import jet_frame

    image = group.image
    where = f"{source}: data.inputs.{group.name}.channels"
    n = len(entries)
    parts = []
    for index, channel in enumerate(image.channels):
        cwhere = f"{where}.{channel.name}"
        columns = []
        counts = None
        for key in ("eta", "phi", "intensity"):
            name = getattr(channel, key)
            values = resolve(name)
            if not _is_jagged(values):
                raise DataValueError(
                    f"{cwhere}.{key}: '{name}' has one value per entry; an image needs one value per "
                    f"element (cell, track, particle)"
                )
            flat, these = _flat(values)
            if counts is None:
                counts = these
            elif not np.array_equal(counts, these):
                raise DataValueError(
                    f"{cwhere}.{key}: list lengths of '{name}' differ from those of '{channel.eta}'"
                )
            rows_of = np.repeat(np.arange(n), counts)
            columns.append(nonfinite(flat.astype(np.float64, copy=False), rows_of, f"{cwhere}.{key}"))
        parts.append((np.repeat(np.arange(n), counts), columns, index))
    entry_of = np.concatenate([p[0] for p in parts])
    order = np.argsort(entry_of, kind="stable")  # all elements of an entry together, channel by channel
    eta, phi, intensity = (np.concatenate([p[1][k] for p in parts])[order] for k in range(3))
    channel = np.concatenate([np.full(len(p[0]), p[2], dtype=np.float32) for p in parts])[order]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(entry_of, minlength=n), out=offsets[1:])
    eta, phi = jet_frame(
        eta,
        phi,
        intensity,
        offsets,
        center=image.center,
        rotate=image.rotate,
        flip=image.flip,
        subjet_radius=image.subjet_radius,
    )
    jagged, _ = JaggedColumns.from_columns([eta, phi, intensity, channel], offsets)  # checked above
    return jagged


def build_flat_group(group: InputGroup, resolve, n: int, source: str, nonfinite) -> np.ndarray:
    """Standardised, clipped float32 array of a per-entry group: ``(N, C)``, or ``(N, C, *shape)``
    for a group of fixed-size arrays (``shape``)."""
    columns = []
    for feature in group.features:
        where = f"{source}: data.inputs.{group.name}.features.{feature.name}"
        values = resolve(feature.name)
        if group.shape is None:
            x = per_entry_values(values, n, where).astype(np.float32)
        else:
            x = _as_shaped(values, n, group.shape, where)
        x = nonfinite(x, None, where)
        x = (x - np.float32(feature.center)) / np.float32(feature.scale)
        if feature.clip is not None:
            x = np.clip(x, *feature.clip)
        columns.append(x.astype(np.float32, copy=False))
    return np.stack(columns, axis=1)


def _as_shaped(values, n: int, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A fixed-size array per entry as float32 ``(n, *shape)`` (the same number of values, reshaped)."""
    if isinstance(values, FlatJagged):
        values = values.to_awkward()
    try:
        array = ak.to_numpy(values) if isinstance(values, ak.Array) else np.asarray(values)
    except ValueError:
        raise DataValueError(
            f"{where} has a varying number of values per entry; shape {list(shape)} needs a fixed-size "
            f"array per entry"
        ) from None
    size = int(np.prod(shape))
    if array.ndim < 2 or len(array) != n or array[0].size != size:
        raise DataValueError(
            f"{where} has shape {array.shape}, expected ({n}, ...) with {size} values per entry "
            f"(data shape {list(shape)})"
        )
    return np.ascontiguousarray(array, dtype=np.float32).reshape((n, *shape))


def build_labels(spec: DataSpec, resolve, entries: np.ndarray, source: str) -> np.ndarray:
    """Class index per entry, from one-hot boolean expressions (each row exactly one) or an integer one."""
    n = len(entries)
    if spec.label_index is not None:
        where = f"{source}: data.labels.index"
        raw = per_entry_values(spec.label_index.evaluate(resolve), n, where)
        index = raw.astype(np.int64)
        bad = np.flatnonzero((index != raw) | (index < 0) | (index >= len(spec.classes)))
        if len(bad):
            raise DataValueError(
                f"{where}: {spec.label_index.text!r} must be an integer in 0..{len(spec.classes) - 1} "
                f"(classes {list(spec.classes)}); {_entries_text(bad, entries)} has {raw[bad[0]]!r}"
            )
        return index
    onehot = np.stack(
        [
            per_entry_values(spec.labels[c].evaluate(resolve), n, f"{source}: data.labels.{c}").astype(bool)
            for c in spec.classes
        ],
        axis=1,
    )
    bad = np.flatnonzero(onehot.sum(axis=1) != 1)
    if len(bad):
        truths = [c for c, t in zip(spec.classes, onehot[bad[0]], strict=True) if t]
        raise DataValueError(
            f"{source}: labels are not exactly one-hot in {_entries_text(bad, entries)}, which is true for "
            f"{truths or 'no class'} of data.labels {dict((c, e.text) for c, e in spec.labels.items())}"
        )
    return onehot.argmax(axis=1).astype(np.int64)


def _finite_per_entry(expression, resolve, entries: np.ndarray, where: str) -> np.ndarray:
    values = per_entry_values(expression.evaluate(resolve), len(entries), where).astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise DataValueError(f"{where}: {expression.text!r} is NaN or inf in {_entries_text(bad, entries)}")
    return values


def selection_mask(arrays: ak.Array, spec: DataSpec, source: str) -> np.ndarray:
    """Boolean mask of the entries of ``arrays`` that pass ``data.selection`` (all True without one)."""
    if spec.selection is None:
        return np.ones(len(arrays), dtype=bool)
    try:
        keep = spec.selection.evaluate(VariableResolver(arrays, spec.variables))
    except ExpressionError as exc:
        raise ExpressionError(f"{source}: {exc}") from exc
    return per_entry_values(keep, len(arrays), f"{source}: data.selection").astype(bool)


def preprocess_chunk(
    arrays: ak.Array, spec: DataSpec, file_index: int, entry_start: int, source: str
) -> ChunkData:
    """All batch columns for the entries of ``arrays`` (read from ``entry_start`` on) that pass the selection.

    ``source`` describes the chunk (file, tree, entry range) for error messages.
    """
    entries = np.arange(entry_start, entry_start + len(arrays), dtype=np.int64)
    if spec.selection is not None:
        keep = selection_mask(arrays, spec, source)
        arrays, entries = arrays[keep], entries[keep]
    n = len(entries)
    data = ChunkData()
    nonfinite = _NonFinite(spec, entries)
    try:
        resolve = VariableResolver(arrays, spec.variables)
        for group in spec.inputs:
            if group.image is not None:
                data.jagged[group.name] = build_image_elements(group, resolve, entries, source, nonfinite)
            elif group.jagged:
                data.jagged[group.name] = build_jagged_group(group, resolve, entries, source, nonfinite)
            else:
                data.columns[group.name] = build_flat_group(group, resolve, n, source, nonfinite)
        if spec.classes:
            data.columns["label"] = build_labels(spec, resolve, entries, source)
        if spec.targets:
            data.columns["targets"] = np.stack(
                [
                    _finite_per_entry(e, resolve, entries, f"{source}: data.targets.{name}")
                    for name, e in spec.targets.items()
                ],
                axis=1,
            )
        if spec.weight is not None:
            data.columns["weight"] = _finite_per_entry(
                spec.weight, resolve, entries, f"{source}: data.weights"
            )
        table = spec.reweighting
        if table is not None:
            values = {
                name: per_entry_values(resolve(name), n, f"{source}: data.reweight.vars.{name}")
                for name in table.variables
            }
            weight = table.weights(values, data.columns["label"]).astype(np.float32)
            data.columns["weight"] = weight * data.columns.get("weight", np.float32(1.0))
        for name in spec.observers:
            data.columns[OBSERVER_PREFIX + name] = per_entry_values(
                resolve(name), n, f"{source}: data.observers.{name}"
            )
    except ExpressionError as exc:
        raise ExpressionError(f"{source}: {exc}") from exc
    if nonfinite.replace:
        data.columns[NONFINITE_COUNT] = nonfinite.count
    data.columns["file_index"] = np.full(n, file_index, dtype=np.int64)
    data.columns["entry"] = entries
    return data
