"""The C heap's handling of large buffers (S3 parts, decompressed pieces): each gets its own mapping, returned to
the system when freed.

glibc's malloc serves a large block with mmap only until a block of that size is freed; then it raises its
threshold (up to 32 MiB) and serves later ones from the heap, where freed parts of a steady stream of 16-64 MiB
buffers fragment and stay resident: an upload with at most 64 MiB of parts in memory peaked 100 MiB above its
start. A fixed threshold keeps the peak at the bytes actually held. Elsewhere (musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3
"""mallopt's parameter number (malloc.h); setting it also turns glibc's moving threshold off."""
MMAP_THRESHOLD = 4 * 1024 * 1024
"""Blocks this large or larger are mapped on their own; smaller ones (pipe reads, 1 MiB pieces) reuse the heap."""


@functools.cache
def return_large_buffers() -> bool:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD (once per process); whether it took."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # no C library by that name, or one without mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
