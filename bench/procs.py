"""Run one command and measure it: wall seconds, exit code, and the peak RSS of its whole process tree.

The command runs in a new session; every process in that session is its tree (pipes, `bash -c` children,
pgBackRest's worker processes, pg_dump -j workers). A sampler thread adds up their resident memory every 50 ms
and also takes each process's own high-water mark (VmHWM), so a short-lived peak between two samples still
counts for that process. The PostgreSQL backend serving the tool is not in the tree (the server started it).
"""

from __future__ import annotations

import os
import pwd
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_EVERY_S = 0.05


@dataclass(frozen=True)
class Measurement:
    returncode: int
    wall_s: float
    peak_rss_bytes: int
    timed_out: bool
    log_tail: str


def _session_processes(session: int) -> list[tuple[int, int]]:
    """(pid, rss bytes) of every live process whose session id is `session`."""
    found: list[tuple[int, int]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2:].split()
        # fields[0] is the state (3rd stat field): session is the 6th stat field, rss the 24th
        if fields[0] != b"Z" and int(fields[3]) == session:
            found.append((int(entry), int(fields[21]) * PAGE_SIZE))
    return found


def _high_water_mark(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_bytes().splitlines():
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(session: int) -> int:
    """Current RSS of the session's processes added up, but never less than the largest single VmHWM."""
    processes = _session_processes(session)
    total = sum(rss for _, rss in processes)
    return max([total, *(_high_water_mark(pid) for pid, _ in processes)])


def tail(path: Path, lines: int = 15) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _kill_session(pid: int) -> None:
    """SIGTERM, then SIGKILL, the process group we started (its pgid is its leader's pid)."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _session_processes(pid):
                return
            time.sleep(0.1)


def measure(cmd: Sequence[str], *, env: Mapping[str, str], log: Path, user: pwd.struct_passwd | None = None,
            timeout_s: float | None = None, cwd: Path | None = None) -> Measurement:
    """Run `cmd` to the end (as `user` when we are root), its output appended to `log`."""
    as_user: dict[str, Any] = {}
    if user is not None and os.geteuid() == 0 and user.pw_uid != 0:
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    with log.open("ab") as out:
        out.write(f"$ {shlex.join(cmd)}\n".encode())
        out.flush()
        started = time.monotonic()
        process = subprocess.Popen(list(cmd), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True, **as_user)
    peak = 0
    timed_out = False
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, timed_out
        while not done.is_set():
            peak = max(peak, tree_rss(process.pid))
            if timeout_s is not None and not timed_out and time.monotonic() - started > timeout_s:
                timed_out = True
                _kill_session(process.pid)
            done.wait(SAMPLE_EVERY_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        returncode = process.wait()
    except BaseException:
        _kill_session(process.pid)
        process.wait()
        raise
    finally:
        wall = time.monotonic() - started
        done.set()
        sampler.join()
    # workers the leader left behind in its session are ours to end
    if _session_processes(process.pid):
        _kill_session(process.pid)
    return Measurement(returncode, wall, peak, timed_out, tail(log))
