"""The compiled loops of the loader (hepnn.data.kernels) against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from hepnn.data.kernels import fill_padded


def padded_reference(values, offsets, rows, length, center, scale, low, high, pad_value, reverse):
    """``(len(rows), C, length)`` and the mask, one entry at a time in numpy."""
    n_channels = values.shape[1]
    out = np.full((len(rows), n_channels, length), pad_value, dtype=np.float32)
    mask = np.zeros((len(rows), length), dtype=bool)
    for i, row in enumerate(rows):
        block = values[offsets[row] : offsets[row + 1]][:length]
        if reverse:
            block = block[::-1]
        out[i, :, : len(block)] = np.clip((block - center) / scale, low, high).T
        mask[i, : len(block)] = True
    return out, mask


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("order", ["shuffled", "consecutive", "repeated and last"])
def test_fill_padded_matches_numpy_for_any_order_of_rows(order, reverse):
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 40, size=300)  # empty entries, and longer ones than the length 24
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    values = rng.normal(size=(offsets[-1], 3)).astype(np.float32)
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
    fill_padded(out, mask, dest, values, offsets, rows, center, 1 / scale, *limits)
    expected, expected_mask = padded_reference(values, offsets, rows, 24, center, scale, *limits)
    np.testing.assert_allclose(out[1:-1], expected, rtol=1e-6)
    np.testing.assert_array_equal(mask[1:-1], expected_mask)
    assert np.isnan(out[0]).all() and np.isnan(out[-1]).all() and mask[0].all() and mask[-1].all()
