"""How the benchmark measures one command (bench/procs.py): the peak memory of the whole process tree, not of
the shell that started it, and a command past its time limit is ended with everything it started."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.procs import measure

MIB = 1024 * 1024


def test_peak_rss_counts_the_children_of_the_command(tmp_path: Path) -> None:
    # the grandchild holds its memory for a while: the sampler reads RSS every 50 ms
    grow = f"{sys.executable} -c 'data = bytearray(96 * 1024 * 1024); data[::4096] = b\"x\" * len(data[::4096]); import time; time.sleep(0.5)'"
    m = measure(["bash", "-c", f"{grow}; true"], env=dict(os.environ), log=tmp_path / "log")
    assert m.returncode == 0 and not m.timed_out
    assert m.peak_rss_bytes >= 96 * MIB  # the python grandchild's memory, not bash's few MiB


def test_a_failing_command_reports_its_exit_code_and_output(tmp_path: Path) -> None:
    m = measure(["bash", "-c", "echo 'pg_dump: error: connection refused' >&2; exit 7"], env=dict(os.environ),
                log=tmp_path / "log")
    assert m.returncode == 7 and "connection refused" in m.log_tail
    assert (tmp_path / "log").read_text().startswith("$ bash -c ")


def test_a_command_past_its_limit_is_ended_with_all_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    m = measure(["bash", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], env=dict(os.environ),
                log=tmp_path / "log", timeout_s=1)
    assert m.timed_out and m.returncode != 0
    child = int(pidfile.read_text())
    assert not Path(f"/proc/{child}").exists() or Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"
