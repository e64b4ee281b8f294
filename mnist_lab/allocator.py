"""Keep freed memory in the process: glibc's allocator otherwise costs small nets a fifth of
their training time.

glibc serves a request above its mmap threshold (128 KiB, rising dynamically) with fresh pages
from the kernel and returns them on free, and gives the top of the heap back once more than
the trim threshold is free. A training step allocates and frees the same activation-sized
buffers (hundreds of KiB to a few MiB for the compact CNN) every step, so each step faulted
in and zeroed 15 MB of new pages. With freed memory kept for reuse (and ReLU in place), an
epoch of the compact CNN on one thread went from ~4,000 to ~5,000 images/s
(docs/PERFORMANCE.md, round four). jemalloc or tcmalloc would do the same, as a preload the
user must install; `mallopt` needs nothing.
"""

from __future__ import annotations

import ctypes
import functools

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed on 64-bit: bigger requests still map
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of freed heap rather than hand it back


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc reuse freed buffers instead of mapping fresh pages each training step;
    False where the C library is not glibc (macOS, musl): nothing changes there."""
    try:  # the process's own symbols: libc's, without a search for the library file
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    # mallopt returns 1 on success; calling it also stops glibc's dynamic threshold changes
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
