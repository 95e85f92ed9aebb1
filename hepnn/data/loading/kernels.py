"""Compiled (numba) loops of the loader: the few steps that numpy cannot do in one pass.

Each kernel has explicit signatures, so it is compiled once and then loaded from numba's
on-disk cache by every process (DataLoader workers included) instead of being recompiled for
each new argument layout. Callers pass C-contiguous arrays of exactly these types.
"""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

CACHE_LINE_FLOATS = 16  # float32 values in a 64-byte cache line


@intrinsic
def prefetch(typingctx, array, index):
    """Ask the CPU to start loading the cache line of ``array[index]`` (1-D) into its caches;
    nothing else happens (LLVM's ``llvm.prefetch``: a read, with high temporal locality)."""

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]], wraparound=False)
        byte_pointer = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        function_type = ir.FunctionType(ir.VoidType(), [byte_pointer, int32, int32, int32])
        function = cgutils.get_or_insert_function(builder.module, function_type, "llvm.prefetch.p0i8")
        read, locality, data_cache = ir.Constant(int32, 0), ir.Constant(int32, 3), ir.Constant(int32, 1)
        builder.call(function, [builder.bitcast(pointer, byte_pointer), read, locality, data_cache])
        return context.get_dummy_value()

    return types.void(array, index), codegen


BLOCK_SIGNATURE = "int64(float32[::1], int64[::1], int64, int64, float32[::1])"


@numba.njit(BLOCK_SIGNATURE, cache=True, nogil=True)
def block_column(column, offsets, c, n_channels, out):
    """Write feature ``c`` of ``n_channels`` into its place in the entry blocks of ``out``; returns
    how many values are NaN or inf.

    ``column`` holds the feature's values for all elements, entry after entry (``offsets``).
    ``out`` is the flat entry-blocked layout of :class:`hepnn.data.preprocess.JaggedColumns`:
    entry ``i`` with ``n`` elements owns ``out[n_channels * offsets[i]:n_channels * offsets[i + 1]]``,
    feature ``c`` at ``c * n`` in it. Each entry's values go as one contiguous run, so the
    ``n_channels`` calls together write every cache line about once, where an element-interleaved
    ``(n, C)`` layout written feature by feature would touch every line once per feature.
    """
    bad = 0
    for i in range(offsets.shape[0] - 1):
        start = offsets[i]
        n = offsets[i + 1] - start
        source = column[start : start + n]  # slices: indices from range(n) need no wraparound test
        run = out[n_channels * start + c * n : n_channels * start + (c + 1) * n]
        for j in range(n):
            x = source[j]
            if not (x - x == 0.0):  # NaN and inf both fail
                bad += 1
            run[j] = x
    return bad


TAKE_SIGNATURE = "int64(float32[::1], int64[::1], int64[::1], int64, float32[::1])"


@numba.njit(TAKE_SIGNATURE, cache=True, nogil=True)
def take_blocks(values, offsets, rows, n_channels, out):
    """Copy the blocks of entries ``rows`` (entry-blocked layout of
    :class:`hepnn.data.preprocess.JaggedColumns`, ``n_channels`` features) one after the other
    into ``out``; returns the number of values written."""
    position = 0
    for k in range(rows.shape[0]):
        start = n_channels * offsets[rows[k]]
        stop = n_channels * offsets[rows[k] + 1]
        out[position : position + stop - start] = values[start:stop]
        position += stop - start
    return position


def fill_signature(chunk_readonly: bool):
    """The types of :func:`fill_padded`; the chunk's ``values`` and ``offsets`` read-only or not
    (chunks loaded from the cache are read-only memory maps, freshly read ones are not)."""
    values = types.Array(types.float32, 1, "C", readonly=chunk_readonly)
    offsets = types.Array(types.int64, 1, "C", readonly=chunk_readonly)
    floats, integers = types.Array(types.float32, 1, "C"), types.Array(types.int64, 1, "C")
    return types.void(
        types.Array(types.float32, 3, "C"),  # out
        types.Array(types.boolean, 2, "C"),  # mask
        integers,  # dest
        values,
        offsets,
        integers,  # rows
        floats,  # center
        floats,  # inv_scale
        floats,  # low
        floats,  # high
        types.float32,  # pad_value
        types.boolean,  # reverse
    )


@numba.njit([fill_signature(False), fill_signature(True)], cache=True, nogil=True)
def fill_padded(out, mask, dest, values, offsets, rows, center, inv_scale, low, high, pad_value, reverse):
    """Write entries ``rows`` of a jagged group into batch rows ``dest`` of ``out``/``mask``.

    ``out`` is ``(B, C, L)``; ``values`` and ``offsets`` are the entry-blocked layout of
    :class:`hepnn.data.preprocess.JaggedColumns` (entry ``i``'s ``n`` values of feature ``c`` at
    ``C * offsets[i] + c * n``). The first ``min(n, L)`` elements of an entry are kept (in
    reverse order if ``reverse``), standardised as ``(x - center) * inv_scale`` and clipped to
    ``[low, high]``; the rest is ``pad_value``.

    One feature at a time, from its contiguous run into its contiguous output row, with padding
    and mask written as slices. Shuffled ``rows`` lie anywhere in ``values``, where the CPU
    cannot guess the next one: while an entry is written, the next entry's block (one
    contiguous range) is prefetched unless it directly follows.
    """
    n_channels = out.shape[1]
    length = out.shape[2]
    for k in range(rows.shape[0]):
        if k + 1 < rows.shape[0] and rows[k + 1] != rows[k] + 1:  # the CPU sees consecutive ones
            first = n_channels * offsets[rows[k + 1]]
            stop = n_channels * offsets[rows[k + 1] + 1]
            for index in range(first, stop, CACHE_LINE_FLOATS):
                prefetch(values, index)
        b = dest[k]
        start = offsets[rows[k]]
        count = offsets[rows[k] + 1] - start
        n = min(count, length)
        mask[b, :n] = True
        mask[b, n:] = False
        block = n_channels * start
        for c in range(n_channels):
            mu = center[c]
            inv = inv_scale[c]
            lo = low[c]
            hi = high[c]
            row = out[b, c]
            run = values[block + c * count : block + c * count + n]
            if reverse:
                for j in range(n):
                    row[j] = min(max((run[n - 1 - j] - mu) * inv, lo), hi)
            else:
                for j in range(n):
                    row[j] = min(max((run[j] - mu) * inv, lo), hi)
            row[n:] = pad_value
