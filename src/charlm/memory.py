"""Keep freed CPU memory in the process for the next step, instead of handing it back (glibc).

glibc serves each large allocation with a fresh `mmap` and unmaps it when it is freed; the
threshold starts at 128 KB and rises with use, but never past 32 MB. A training step that
allocates and frees the same big buffers every step therefore pays a page fault and a zeroed
page for every 4 KB of them, every step. oneDNN's LSTM workspace is such a buffer: the default
2-layer LSTM-256 on 32 × 128 characters faults in ~85 MB a step (~21,000 page faults), a fifth of
its step time on a 2-core CPU. With `mmap` and trimming off, freed blocks stay in the heap and
the next step reuses them. The price: the process keeps its peak memory until it exits.

Elsewhere than glibc (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
REUSE = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}  # no mmap for big blocks; never trim the heap


@cache
def glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def reuse_freed_memory() -> bool:
    """Keep freed memory for reuse; False where there is no glibc or it refused a setting."""
    libc = glibc()
    if libc is None:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in REUSE.items())


def release_free_memory() -> None:
    """Hand the free parts of the heap back to the OS, so the next allocations start cold."""
    libc = glibc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
