"""The chunk cache's files: read back read-only, kept mapped within a byte limit, never carried to workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from hepnn.data.cache import ChunkCache
from hepnn.data.loading.kernels import fill_padded
from hepnn.data.preprocess import ChunkData, JaggedColumns
from hepnn.data.source import Chunk


def chunk_data(first_entry: int, n: int = 100) -> ChunkData:
    """``n`` entries with 2 elements each of 3 features, and an entry-number column."""
    offsets = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
    values = np.arange(3 * 2 * n, dtype=np.float32) + first_entry
    return ChunkData(
        {"particles": JaggedColumns(values, offsets, 3)},
        {"entry": np.arange(first_entry, first_entry + n, dtype=np.int64)},
    )


def chunk(start: int, n: int = 100) -> Chunk:
    return Chunk(0, "jets.root", start, start + n, file_id="uuid")


def test_loaded_chunks_are_the_stored_ones_read_only_and_kept_mapped(tmp_path):
    cache = ChunkCache(tmp_path)
    assert cache.load(chunk(0)) is None  # not cached yet
    cache.store(chunk(0), chunk_data(0))
    first, again = cache.load(chunk(0)), cache.load(chunk(0))
    np.testing.assert_array_equal(first.columns["entry"], np.arange(100))
    np.testing.assert_array_equal(first.jagged["particles"].values, chunk_data(0).jagged["particles"].values)
    # the second load finds the first one's map: the same memory, not mapped again
    assert np.shares_memory(first.columns["entry"], again.columns["entry"])
    with pytest.raises(ValueError, match="read-only"):
        first.columns["entry"][0] = 7  # a write would reach every later epoch
    # the compiled fill reads read-only chunks as it reads freshly preprocessed ones
    out, mask = np.empty((2, 3, 4), np.float32), np.empty((2, 4), np.bool_)
    group = first.jagged["particles"]
    assert not group.values.flags.writeable and not group.offsets.flags.writeable
    center, scale = np.zeros(3, np.float32), np.ones(3, np.float32)
    low, high = np.full(3, -np.inf, np.float32), np.full(3, np.inf, np.float32)
    rows = np.array([5, 0], dtype=np.int64)
    dest = np.arange(2)
    fill_padded(out, mask, dest, group.values, group.offsets, rows, center, scale, low, high, -1.0, False)
    np.testing.assert_array_equal(out[0, :, :2], group.values[30:36].reshape(3, 2))
    np.testing.assert_array_equal(mask, [[True, True, False, False]] * 2)
    assert (out[:, :, 2:] == -1).all()


def test_maps_beyond_the_byte_limit_go_least_recently_loaded_first(tmp_path):
    size = sum(a.nbytes for a in chunk_data(0).to_arrays().values())
    cache = ChunkCache(tmp_path, mapped_bytes_limit=2 * size)
    for start in (0, 100, 200):
        cache.store(chunk(start), chunk_data(start))
    kept = cache.load(chunk(0))
    cache.load(chunk(100))
    cache.load(chunk(0))  # now the most recently loaded
    cache.load(chunk(200))  # over the limit: chunk 100 goes, chunk 0 stays
    assert np.shares_memory(cache.load(chunk(0)).columns["entry"], kept.columns["entry"])
    assert [path.name for path in cache._mapped] == ["uuid_200_300.chunk", "uuid_0_100.chunk"]
    assert cache._mapped_bytes == 2 * size
    # a single chunk larger than the limit is still loaded (and kept alone)
    tiny = ChunkCache(tmp_path, mapped_bytes_limit=1)
    np.testing.assert_array_equal(tiny.load(chunk(100)).columns["entry"], np.arange(100, 200))
    tiny.load(chunk(200))
    assert len(tiny._mapped) == 1


def test_a_worker_receives_the_cache_without_the_maps(tmp_path):
    cache = ChunkCache(tmp_path)
    cache.store(chunk(0), chunk_data(0))
    cache.load(chunk(0))
    copy = pickle.loads(pickle.dumps(cache))
    assert len(cache._mapped) == 1 and not copy._mapped and copy._mapped_bytes == 0
    np.testing.assert_array_equal(copy.load(chunk(0)).columns["entry"], np.arange(100))
