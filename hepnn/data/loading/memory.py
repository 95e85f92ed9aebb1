"""Keeping freed memory in a process instead of returning it to the system (glibc ``mallopt``).

glibc's allocator serves blocks above its mmap threshold (128 KB at first, raised as such
blocks are freed, to at most 32 MB) with ``mmap`` and hands them back to the system when they are
freed (``munmap``); free memory at the top of its heap goes back too (trimming). The next block
then comes as fresh pages, each zeroed by the kernel on its first touch (a page fault). A loader
epoch or a training step allocates and frees the same large arrays again and again, so without
this a process pays those page faults over and over, in DataLoader workers and in the training
process alike.

With :func:`keep_freed_memory`, blocks below 512 MB come from the heap and free memory is kept
(up to 1 GB at the top of the heap) for the next allocations. The price: a process keeps the
memory of its largest allocations once it has made them, so its resident memory stays near its
peak. DataLoader workers always do this (their memory is bounded by ``chunk_size``/``buffer_size``);
the training and evaluation processes do unless the data config says ``keep_freed_memory: false``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 512 * 2**20  # blocks below this come from the heap (reused), not mmap
TRIM_THRESHOLD_BYTES = 2**30  # free memory at the top of the heap kept up to this


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds in this process (once); False where there is no
    glibc ``mallopt`` (other platforms: nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
