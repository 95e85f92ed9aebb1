"""Keeping freed memory in a DataLoader worker instead of returning it to the system.

Worker processes start fresh (once per loader; every epoch without persistent workers). glibc's
allocator hands large blocks back to the system when they are freed (``munmap``, or trimming
the top of the heap) until its thresholds have adapted, so a fresh worker touches new pages for
every chunk's arrays: each page fault zeroes 4 KiB, which cost a worker about half as much
again as the work itself (0.3 of 0.6 CPU seconds per 200k jets). A worker's memory is bounded
by ``chunk_size``/``buffer_size``, so it can keep what it freed and reuse it.
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
