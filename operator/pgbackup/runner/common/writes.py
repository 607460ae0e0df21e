"""Writing a whole buffer to a file descriptor: os.write may write less than it was given (a pipe, a signal)."""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`, however many os.write calls that takes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
