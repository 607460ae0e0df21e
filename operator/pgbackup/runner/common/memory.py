"""The C heap's handling of large buffers (S3 parts, decompressed pieces): each gets its own mapping, returned to
the system when freed.

glibc's malloc serves a large block with mmap only until a block of that size is freed; then it raises its
threshold (up to 32 MiB) and serves later ones from the heap, where freed parts of a steady stream of 16-64 MiB
buffers fragment and stay resident: an upload with at most 64 MiB of parts in memory peaked 100 MiB above its
start. A fixed threshold keeps the peak at the bytes actually held. Its heap, though, gives back any free top
beyond 128 KiB at once, so a stream of 1 MiB pieces (a restore staging 950 MB) had each piece's pages faulted in
anew: 280,000 page faults; keeping up to TRIM_THRESHOLD free makes it 49,000 (43,000 with 16 MiB), for a MiB or two
more resident.
Elsewhere (musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3
"""mallopt's parameter number (malloc.h); setting it also turns glibc's moving threshold off."""
MMAP_THRESHOLD = 4 * 1024 * 1024
"""Blocks this large or larger are mapped on their own; smaller ones (pipe reads, 1 MiB pieces) reuse the heap."""
M_TRIM_THRESHOLD = -1
TRIM_THRESHOLD = 4 * 1024 * 1024
"""Free memory at the heap's top kept for the next blocks rather than given back."""


@functools.cache
def return_large_buffers() -> bool:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD and its trim threshold at TRIM_THRESHOLD (once per process);
    whether it took."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # no C library by that name, or one without mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
