"""The runner's C heap setting: large buffers (S3 parts) get their own mappings, so freeing one returns it."""

from __future__ import annotations

import platform

import pytest

from pgbackup.runner.common.memory import return_large_buffers


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_the_mmap_and_trim_thresholds_are_fixed_once_per_process_on_glibc() -> None:
    assert return_large_buffers() is True
    assert return_large_buffers() is True  # cached: set once
