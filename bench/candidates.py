"""The project's runner (`pgbackup backup` / `pgbackup restore`) as a Job runs it: a policy in $PGBACKUP_POLICY,
credentials in the environment, a volume root and scratch directory. The same candidates `make bench-shared`
hands to the shared harness (scripts/bench.sh).

Ids (for --only): pgbackup_s3, pgbackup_fd_s3, pgbackup_vol, pgbackup_phys_vol, pgbackup_phys_s3; restores
pgbackup_restore_s3, pgbackup_restore_fd_s3.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.context import Context, Tool, ToolUnavailable, dir_bytes
from bench.dataset import check_restored
from bench.report import Row


@dataclass(frozen=True)
class Candidate:
    mode: str  # s3, fd-s3, vol, phys-vol, phys-s3 (the names scripts/bench.sh uses)
    full_every: int | None = None  # physical: spec.physical.fullEvery (incremental backups in between)

    @property
    def physical(self) -> bool:
        return self.mode.startswith("phys")

    @property
    def to_s3(self) -> bool:
        return self.mode.endswith("s3")


def runner() -> str:
    """The `pgbackup` console script of this interpreter's environment (the project's .venv)."""
    found = Path(sys.executable).parent / "pgbackup"
    if found.exists():
        return str(found)
    on_path = shutil.which("pgbackup")
    if on_path is None:
        raise ToolUnavailable("the pgbackup runner is not installed: run 'make deps' first")
    return on_path


def policy(ctx: Context, candidate: Candidate, bucket: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "database": {"host": str(ctx.pg.socket_dir), "port": ctx.pg.port, "databases": ["bench"],
                     "credentialsSecret": {"name": "bench"}, "sslMode": "disable"},
        "schedule": "0 2 * * *",
        "retention": {"keepLast": 100},
        "compression": {"algorithm": "zstd", "level": 3},
        "method": "physical" if candidate.physical else "logical",
        "logical": {"format": "directory", "jobs": ctx.jobs} if candidate.mode == "fd-s3" else {"format": "custom"},
    }
    if candidate.full_every is not None:
        spec["physical"] = {"fullEvery": candidate.full_every}
    if candidate.to_s3:
        spec["storage"] = {"s3": {"bucket": bucket, "endpoint": ctx.s3.endpoint, "forcePathStyle": True,
                                  "prefix": "pgbackup", "partSizeMib": 16}}
    else:
        spec["storage"] = {"volume": {"claimName": "bench", "path": ""}}
    return {"name": f"bench-{candidate.mode}", "namespace": "bench", "spec": spec}


def runner_env(ctx: Context, candidate: Candidate, out: Path, bucket: str, dbname: str = "bench") -> dict[str, str]:
    return ctx.client_env(dbname, PGBACKUP_POLICY=json.dumps(policy(ctx, candidate, bucket)),
                          PGBACKUP_VOLUME_ROOT=str(out), PGBACKUP_SCRATCH=str(out),
                          PGBACKUP_SUMMARY_FILE="/dev/null")


def backup(candidate: Candidate) -> Callable[[Context, Row], None]:
    def run(ctx: Context, row: Row) -> None:
        command = runner()
        out = ctx.out_dir(row.id)
        bucket = ctx.s3.new_bucket(row.id.replace("_", "-"))
        ctx.timed(row, [command, "backup"], env=runner_env(ctx, candidate, out, bucket))
        local, remote = dir_bytes(out), ctx.s3.bucket_bytes(bucket)
        row.bytes = local + remote
        what = "pg_basebackup -Ft -X fetch" if candidate.physical else (
            f"pg_dump -Fd -j {ctx.jobs} in scratch, tar" if candidate.mode == "fd-s3" else "pg_dump -Fc streamed")
        row.notes = f"{what} -> zstd 3 -> {'S3' if candidate.to_s3 else 'volume'}; bytes {local} local + {remote} S3"
        ctx.outputs[row.id] = out
        ctx.buckets[row.id] = bucket
        ctx.sizes[row.id] = row.bytes
    return run


def restore(candidate: Candidate, source_id: str) -> Callable[[Context, Row], None]:
    def run(ctx: Context, row: Row) -> None:
        out, bucket = ctx.outputs.get(source_id), ctx.buckets.get(source_id)
        if out is None or bucket is None:
            raise ToolUnavailable(f"no {source_id} backup to restore (that backup failed or was skipped)")
        db = f"restore_{row.id}"
        ctx.pg.psql(f"CREATE DATABASE {db} TEMPLATE template0", "postgres")
        jobs = ["--jobs", str(ctx.jobs)] if candidate.mode == "fd-s3" else []
        try:
            ctx.timed(row, [runner(), "restore", "latest", "--target-database", db, "--allow-empty-target", *jobs],
                      env=runner_env(ctx, candidate, out, bucket, db))
            row.notes = "runner restore from S3 (download, zstd -d, pg_restore, its own row-count check); " + \
                check_restored(ctx.pg, db, ctx.dataset)
        finally:
            ctx.pg.psql(f"DROP DATABASE IF EXISTS {db}", "postgres")
        row.bytes = ctx.sizes[source_id]
    return run


S3, FD_S3, VOL, PHYS_VOL, PHYS_S3 = (Candidate(m) for m in ("s3", "fd-s3", "vol", "phys-vol", "phys-s3"))
BACKUPS = (
    Tool("pgbackup_s3", "backup", "pgbackup logical -Fc → S3", backup(S3)),
    Tool("pgbackup_fd_s3", "backup", "pgbackup logical -Fd -j 2 → S3", backup(FD_S3)),
    Tool("pgbackup_vol", "backup", "pgbackup logical -Fc → volume", backup(VOL)),
    Tool("pgbackup_phys_vol", "backup", "pgbackup physical → volume", backup(PHYS_VOL)),
    Tool("pgbackup_phys_s3", "backup", "pgbackup physical → S3", backup(PHYS_S3)),
)
RESTORES = (
    Tool("pgbackup_restore_s3", "restore", "pgbackup restore -Fc from S3", restore(S3, "pgbackup_s3"),
         needs=("pgbackup_s3",)),
    Tool("pgbackup_restore_fd_s3", "restore", "pgbackup restore -Fd -j 2 from S3", restore(FD_S3, "pgbackup_fd_s3"),
         needs=("pgbackup_fd_s3",)),
)
