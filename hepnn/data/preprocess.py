"""Vectorised conversion of a chunk of ROOT entries into dense, standardised numpy arrays.

Input: the awkward record array read for a chunk. Output: a dict of numpy arrays with one row
per selected entry: each input group (``(N, C, P)`` for jagged groups with a boolean mask
``(N, P)``, ``(N, C)`` for per-entry groups), ``label`` (class index), ``observers`` and the
provenance ``file_index``/``entry``. Work is done with whole-array awkward/numpy operations.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from hepnn.data.expressions import ExpressionError, VariableResolver
from hepnn.data.spec import DataSpec, InputGroup
from hepnn.errors import InputError


class DataValueError(InputError):
    """Input values violate what the spec expects (non-finite, not one-hot, wrong shape)."""


def pad_jagged(values: ak.Array, length: int, pad_value: float) -> np.ndarray:
    """``(N, length)`` float32 array: lists clipped to ``length``, short ones padded with ``pad_value``."""
    padded = ak.fill_none(ak.pad_none(values, length, axis=1, clip=True), pad_value)
    return ak.to_numpy(padded).astype(np.float32, copy=False)


def valid_mask(counts: np.ndarray, length: int) -> np.ndarray:
    """``(N, length)`` boolean mask, True for the first ``min(count, length)`` positions of each row."""
    return np.arange(length)[None, :] < np.minimum(counts, length)[:, None]


def _is_jagged(values) -> bool:
    return isinstance(values, ak.Array) and values.ndim == 2


def _as_per_entry(values, n: int, where: str) -> np.ndarray:
    if isinstance(values, ak.Array):
        if values.ndim != 1:
            raise DataValueError(
                f"{where} has one value per particle, but one value per entry is expected here"
            )
        values = ak.to_numpy(values)
    array = np.asarray(values)
    if array.ndim == 0:
        array = np.full(n, array)
    if array.shape != (n,):
        raise DataValueError(f"{where} has shape {array.shape}, expected ({n},)")
    return array


def _check_finite(values: np.ndarray, valid: np.ndarray | None, where: str, entries: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if valid is not None:
        bad &= valid
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))
        raise DataValueError(
            f"{where}: {int(bad.sum())} non-finite value(s) (NaN or inf) in {len(rows)} "
            f"entr{'y' if len(rows) == 1 else 'ies'}, "
            f"first at entry {int(entries[rows[0]])}"
        )


def build_group(group: InputGroup, resolve, entries: np.ndarray, source: str) -> dict[str, np.ndarray]:
    """Dense standardised arrays of one input group (and its mask)."""
    n = len(entries)
    columns = []
    mask = None
    for feature in group.features:
        where = f"{source}: data.inputs.{group.name}.features.{feature.name}"
        values = resolve(feature.name)
        if group.length is None:
            x = _as_per_entry(values, n, where).astype(np.float32)
            _check_finite(x, None, where, entries)
        else:
            if not _is_jagged(values):
                raise DataValueError(
                    f"{where} has one value per entry, but group '{group.name}' has length "
                    f"{group.length} and needs a list per entry (e.g. one value per particle)"
                )
            counts = ak.to_numpy(ak.num(values, axis=1))
            this_mask = valid_mask(counts, group.length)
            if mask is None:
                mask = this_mask
            elif not np.array_equal(mask, this_mask):
                raise DataValueError(
                    f"{where}: list lengths differ from those of the group's first feature "
                    f"'{group.features[0].name}'"
                )
            x = pad_jagged(values, group.length, group.pad_value)
            _check_finite(x, mask, where, entries)
        x = (x - feature.center) / feature.scale
        if feature.clip is not None:
            x = np.clip(x, *feature.clip)
        columns.append(x)
    stacked = np.stack(columns, axis=1).astype(np.float32, copy=False)
    if mask is None:
        return {group.name: stacked}
    stacked = np.where(mask[:, None, :], stacked, np.float32(group.pad_value))
    return {group.name: stacked, group.mask_key: mask}


def build_labels(spec: DataSpec, resolve, entries: np.ndarray, source: str) -> np.ndarray:
    """Class index per entry from the one-boolean-per-class label expressions; each row must be one-hot."""
    n = len(entries)
    onehot = np.stack(
        [
            _as_per_entry(spec.labels[c].evaluate(resolve), n, f"{source}: data.labels.{c}").astype(bool)
            for c in spec.classes
        ],
        axis=1,
    )
    n_true = onehot.sum(axis=1)
    bad = np.flatnonzero(n_true != 1)
    if len(bad):
        first = int(bad[0])
        truths = [c for c, t in zip(spec.classes, onehot[first], strict=True) if t]
        raise DataValueError(
            f"{source}: labels are not exactly one-hot in {len(bad)} entr{'y' if len(bad) == 1 else 'ies'}; "
            f"entry {int(entries[first])} is true for {truths or 'no class'} of data.labels "
            f"{dict((c, e.text) for c, e in spec.labels.items())}"
        )
    return onehot.argmax(axis=1).astype(np.int64)


def preprocess_chunk(
    arrays: ak.Array, spec: DataSpec, file_index: int, entry_start: int, source: str
) -> dict:
    """All batch columns for the entries of ``arrays`` (read from ``entry_start`` on) that pass the selection.

    ``source`` describes the chunk (file, tree, entry range) for error messages.
    """
    entries = np.arange(entry_start, entry_start + len(arrays), dtype=np.int64)
    try:
        if spec.selection is not None:
            keep = _as_per_entry(
                spec.selection.evaluate(VariableResolver(arrays, spec.variables)),
                len(arrays),
                f"{source}: data.selection",
            ).astype(bool)
            arrays, entries = arrays[keep], entries[keep]
        resolve = VariableResolver(arrays, spec.variables)
        out: dict = {}
        for group in spec.inputs:
            out.update(build_group(group, resolve, entries, source))
        out["label"] = build_labels(spec, resolve, entries, source)
        out["observers"] = {
            name: _as_per_entry(resolve(name), len(entries), f"{source}: data.observers.{name}")
            for name in spec.observers
        }
    except ExpressionError as exc:
        raise ExpressionError(f"{source}: {exc}") from exc
    out["file_index"] = np.full(len(entries), file_index, dtype=np.int64)
    out["entry"] = entries
    return out
