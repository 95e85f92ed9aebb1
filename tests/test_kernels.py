"""The compiled loops of the loader (hepnn.data.loading.kernels) and the entry-blocked jagged layout they
work on (hepnn.data.preprocess.JaggedColumns), against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from hepnn.data.loading.kernels import fill_padded
from hepnn.data.preprocess import ChunkData, JaggedColumns


def padded_reference(columns, offsets, rows, length, center, scale, low, high, pad_value, reverse):
    """``(len(rows), C, length)`` and the mask, one entry at a time in numpy, from ``(C, n)`` columns."""
    n_channels = columns.shape[0]
    out = np.full((len(rows), n_channels, length), pad_value, dtype=np.float32)
    mask = np.zeros((len(rows), length), dtype=bool)
    for i, row in enumerate(rows):
        block = columns[:, offsets[row] : offsets[row + 1]][:, :length]
        if reverse:
            block = block[:, ::-1]
        out[i, :, : block.shape[1]] = np.clip((block.T - center) / scale, low, high).T
        mask[i, : block.shape[1]] = True
    return out, mask


def random_jagged(rng, n_entries: int, n_features: int, max_count: int = 40):
    counts = rng.integers(0, max_count, size=n_entries)  # empty entries, and longer ones
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    columns = rng.normal(size=(n_features, offsets[-1])).astype(np.float32)
    return columns, offsets


def test_the_entry_blocks_hold_each_entry_feature_after_feature():
    rng = np.random.default_rng(3)
    columns, offsets = random_jagged(rng, 50, 3)
    columns[1, 7] = np.nan
    columns[2, [0, 9]] = np.inf
    jagged, bad = JaggedColumns.from_columns(list(columns), offsets)
    assert bad == [0, 1, 2]
    for i in range(50):
        start, stop = offsets[i], offsets[i + 1]
        expected = columns[:, start:stop].ravel()  # feature 0's values, then feature 1's, ...
        np.testing.assert_array_equal(jagged.values[3 * start : 3 * stop], expected)
    rows = np.array([49, 0, 17, 17, 3])
    elements, element_offsets = jagged.elements(rows)
    expected = np.concatenate([columns[:, offsets[r] : offsets[r + 1]] for r in rows], axis=1)
    np.testing.assert_array_equal(elements, expected)
    np.testing.assert_array_equal(np.diff(element_offsets), np.diff(offsets)[rows])
    first_five, _ = jagged.elements(rows, limit=5)
    expected = np.concatenate([columns[:, offsets[r] : offsets[r + 1]][:, :5] for r in rows], axis=1)
    np.testing.assert_array_equal(first_five, expected)
    part = jagged.select(10, 20)  # entries 10..19, sharing memory
    assert np.shares_memory(part.values, jagged.values)
    np.testing.assert_array_equal(part.elements(np.arange(10))[0], columns[:, offsets[10] : offsets[20]])
    jagged.replace_feature(1, np.zeros(offsets[-1], dtype=np.float32))
    assert not jagged.elements(np.arange(50))[0][1].any()


def test_gathering_entries_of_several_chunks_copies_their_blocks_in_order():
    """What compacting the shuffle reservoir does: chosen entries of several chunks (any order,
    empty entries included) copied into one chunk, per-entry columns of any shape alongside."""
    rng = np.random.default_rng(5)
    chunks, parts = [], []
    for n_entries, rows in ((30, [29, 0, 4, 4, 11]), (20, [7]), (25, list(range(24, -1, -3)))):
        columns, offsets = random_jagged(rng, n_entries, 3)
        jagged, _ = JaggedColumns.from_columns(list(columns), offsets)
        per_entry = {
            "entry": np.arange(n_entries) + 100 * len(chunks),
            "targets": rng.normal(size=(n_entries, 2)),
        }
        chunks.append((columns, offsets))
        parts.append((ChunkData({"particles": jagged}, per_entry), np.array(rows)))
    gathered = ChunkData.gather(parts)
    assert len(gathered) == 5 + 1 + 9 and not gathered.mapped
    expected = np.concatenate(
        [
            columns[:, offsets[r] : offsets[r + 1]]
            for (columns, offsets), (_, rows) in zip(chunks, parts, strict=True)
            for r in rows
        ],
        axis=1,
    )
    particles = gathered.jagged["particles"]
    np.testing.assert_array_equal(particles.elements(np.arange(len(gathered)))[0], expected)
    counts = [np.diff(offsets)[rows] for (_, offsets), (_, rows) in zip(chunks, parts, strict=True)]
    np.testing.assert_array_equal(particles.counts, np.concatenate(counts))
    for key in ("entry", "targets"):
        np.testing.assert_array_equal(
            gathered.columns[key], np.concatenate([d.columns[key][r] for d, r in parts])
        )
    assert not np.shares_memory(particles.values, parts[0][0].jagged["particles"].values)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("order", ["shuffled", "consecutive", "repeated and last"])
def test_fill_padded_matches_numpy_for_any_order_of_rows(order, reverse):
    rng = np.random.default_rng(7)
    columns, offsets = random_jagged(rng, 300, 3)  # counts up to 39, beyond the length 24
    jagged, _ = JaggedColumns.from_columns(list(columns), offsets)
    rows = {
        "shuffled": rng.permutation(300)[:100],
        "consecutive": np.arange(150, 250),
        "repeated and last": np.array([299, 299, 0, 299, 5, 6, 299]),  # the last entry's end is the array's
    }[order].astype(np.int64)
    center = np.array([0.1, -0.2, 0.0], dtype=np.float32)
    scale = np.array([0.5, 2.0, 1.0], dtype=np.float32)
    low = np.array([-1.5, -np.inf, -0.5], dtype=np.float32)
    high = np.array([1.5, np.inf, 0.5], dtype=np.float32)
    out = np.full((len(rows) + 2, 3, 24), np.nan, dtype=np.float32)  # rows 0 and -1 stay untouched
    mask = np.ones((len(rows) + 2, 24), dtype=bool)
    dest = np.arange(1, len(rows) + 1, dtype=np.int64)
    limits = (low, high, np.float32(-9.0), reverse)
    fill_padded(out, mask, dest, jagged.values, offsets, rows, center, 1 / scale, *limits)
    expected, expected_mask = padded_reference(columns, offsets, rows, 24, center, scale, *limits)
    np.testing.assert_allclose(out[1:-1], expected, rtol=1e-6)
    np.testing.assert_array_equal(mask[1:-1], expected_mask)
    assert np.isnan(out[0]).all() and np.isnan(out[-1]).all() and mask[0].all() and mask[-1].all()
