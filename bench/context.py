"""What every tool's function gets: the server, the S3 store, the dataset, a work directory, and `timed()`."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.dataset import Dataset
from bench.install import say
from bench.postgres import Postgres
from bench.procs import measure
from bench.report import Row
from bench.s3 import CREDENTIALS, S3Server


def new_workdir(prefix: str, parent: str | None) -> Path:
    """A new working directory (under `parent`, made when missing) with a logs/ folder, both reachable by the
    servers' account."""
    if parent is not None:
        Path(parent).mkdir(mode=0o755, parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    workdir.chmod(0o755)  # the servers' account must reach their data directories
    (workdir / "logs").mkdir(mode=0o777)
    (workdir / "logs").chmod(0o777)
    return workdir


def leave_workdir(workdir: Path, keep: bool, kept_note: str = "") -> None:
    """At the end of a run: remove the working directory, or with --keep say where it is."""
    if keep:
        say(f"kept {workdir}{kept_note}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


class ToolUnavailable(Exception):
    """The tool cannot run here (not installed, its source backup missing): its row says why."""


@dataclass
class Context:
    pg: Postgres
    s3: S3Server
    dataset: Dataset
    workdir: Path
    jobs: int
    timeout_s: float
    # what a backup left for its restore, by the backup's tool id: its file/dir/config, bucket, size in bytes
    outputs: dict[str, Path] = field(default_factory=dict)
    buckets: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def out_dir(self, name: str, for_server: bool = False) -> Path:
        """A fresh directory for one tool's output (owned by the server's account when it writes there)."""
        path = self.workdir / "out" / re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
        path.mkdir(parents=True, mode=0o777 if not for_server else 0o700)
        if for_server:
            os.chown(path, self.pg.account.pw_uid, self.pg.account.pw_gid)
        return path

    def client_env(self, dbname: str = "bench", **extra: str) -> dict[str, str]:
        return {**self.pg.client_env(dbname), **CREDENTIALS, **extra}

    def prepare(self, row: Row, cmd: Sequence[str], *, as_server: bool = False) -> None:
        """Run a setup step of `row`'s tool (not timed, e.g. pgBackRest's stanza-create); raise when it fails."""
        env = {**self.pg.server_env(), **CREDENTIALS} if as_server else self.client_env()
        m = measure(cmd, env=env, log=self.workdir / "logs" / f"{row.id}.log",
                    user=self.pg.account if as_server else None, timeout_s=self.timeout_s, cwd=self.workdir)
        if m.returncode != 0 or m.timed_out:
            raise RuntimeError(f"setup step {shlex.join(cmd[:4])} failed (exit {m.returncode}): {m.log_tail[-600:]}")

    def timed(self, row: Row, cmd: Sequence[str], *, as_server: bool = False, env: Mapping[str, str] | None = None,
              step: str | None = None) -> None:
        """Run one command of `row`'s tool, add its wall time and peak RSS to the row; raise when it fails."""
        if env is None:
            env = {**self.pg.server_env(), **CREDENTIALS} if as_server else self.client_env()
        logs = self.workdir / "logs"
        m = measure(cmd, env=env, log=logs / f"{row.id}.log", user=self.pg.account if as_server else None,
                    timeout_s=self.timeout_s, cwd=self.workdir)
        row.wall_s = (row.wall_s or 0.0) + m.wall_s
        row.peak_rss_bytes = max(row.peak_rss_bytes or 0, m.peak_rss_bytes)
        if step:
            row.parts[step] = round(m.wall_s, 2)
        if m.timed_out:
            raise RuntimeError(f"timed out after {self.timeout_s:.0f}s: {m.log_tail[-400:]}")
        if m.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} exited {m.returncode}: {m.log_tail[-600:]}")


@dataclass(frozen=True)
class Tool:
    """One row of the benchmark: its id (for --only), what it measures, and the function that runs it."""

    id: str
    kind: str
    label: str
    run: Callable[[Context, Row], None]
    needs: tuple[str, ...] = ()  # ids of the tools whose output it reads (a restore's backup)


def dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
