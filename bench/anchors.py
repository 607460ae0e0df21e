"""The tools users would otherwise pick, each run the way its documentation recommends, into a fresh location.

Ids (for --only): pg_dump_fc, cron_gzip_s3 (the baseline), pg_dump_fd, basebackup_gz, basebackup_zstd,
pgbackrest_posix, pgbackrest_s3, barman_cloud; restores restore_fc_j1, restore_fc_j2, restore_fd_j1,
restore_fd_j2, pgbackrest_restore.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from bench.context import Context, Tool, ToolUnavailable, dir_bytes
from bench.dataset import check_restored
from bench.report import Row

def pg_dump_fc(ctx: Context, row: Row) -> None:
    out = ctx.out_dir(row.id) / "bench.dump"
    ctx.timed(row, [ctx.pg.bin("pg_dump"), "-Fc", "-f", str(out), "bench"])
    row.bytes = dir_bytes(out)
    row.notes = "custom format, default compression (gzip 6)"
    ctx.outputs[row.id] = out


def cron_gzip_s3(ctx: Context, row: Row) -> None:
    """The cron script this project replaces: a plain dump through gzip -6 to a file, then `aws s3 cp`."""
    out = ctx.out_dir(row.id) / "bench.sql.gz"
    pipeline = f"set -o pipefail; {shlex.quote(ctx.pg.bin('pg_dump'))} -Fp bench | gzip -6 > {shlex.quote(str(out))}"
    ctx.timed(row, ["bash", "-c", pipeline], step="dump_gzip")
    bucket = ctx.s3.new_bucket("cron")
    ctx.timed(row, [sys.executable, "-m", "bench.upload", str(out), ctx.s3.endpoint, bucket, "daily/bench.sql.gz"],
              env=ctx.client_env(PYTHONPATH=str(Path(__file__).resolve().parent.parent)), step="upload")
    row.bytes = ctx.s3.bucket_bytes(bucket)
    row.notes = (f"pg_dump -Fp | gzip -6 {row.parts['dump_gzip']:.1f}s + boto3 upload_file "
                 f"{row.parts['upload']:.1f}s")


def pg_dump_fd(ctx: Context, row: Row) -> None:
    out = ctx.out_dir(row.id) / "bench.dir"
    if ctx.pg.major >= 16:
        compression, row.notes = ["-Z", "zstd:3"], "zstd:3"
    else:
        compression, row.notes = [], f"gzip (default): pg_dump {ctx.pg.major} has no zstd (needs 16)"
    ctx.timed(row, [ctx.pg.bin("pg_dump"), "-Fd", "-j", str(ctx.jobs), *compression, "-f", str(out), "bench"])
    row.bytes = dir_bytes(out)
    ctx.outputs[row.id] = out


def _basebackup(ctx: Context, row: Row, compression: list[str], note: str) -> None:
    out = ctx.out_dir(row.id) / "base"
    ctx.timed(row, [ctx.pg.bin("pg_basebackup"), "-D", str(out), "-Ft", *compression, "-c", "fast", "-X", "stream"])
    row.bytes = dir_bytes(out)
    row.notes = f"{note}; whole cluster + WAL, -c fast -X stream"


def basebackup_gz(ctx: Context, row: Row) -> None:
    _basebackup(ctx, row, ["-z"], "client gzip")


def basebackup_zstd(ctx: Context, row: Row) -> None:
    _basebackup(ctx, row, ["-Z", "client-zstd:3"], "client zstd:3")


# --------------------------------------------------------------------------------------------- pgBackRest
def pgbackrest_config(ctx: Context, name: str, repo: list[str]) -> Path:
    home = ctx.out_dir(f"pgbackrest-{name}", for_server=True)
    for sub in ("log", "lock", "spool"):
        (home / sub).mkdir()
        shutil.chown(home / sub, ctx.pg.account.pw_uid, ctx.pg.account.pw_gid)
    config = home / "pgbackrest.conf"
    config.write_text("\n".join([
        "[global]", *repo, "repo1-retention-full=1", "compress-type=zst", "compress-level=3",
        f"process-max={ctx.jobs}", "start-fast=y", f"log-path={home}/log", f"lock-path={home}/lock",
        f"spool-path={home}/spool", "log-level-console=warn", "log-level-file=info", "archive-timeout=120", "",
        "[bench]", f"pg1-path={ctx.pg.datadir}", f"pg1-port={ctx.pg.port}", f"pg1-socket-path={ctx.pg.socket_dir}",
        "pg1-user=postgres", ""]))
    config.chmod(0o644)
    return config


def pgbackrest_cmd(config: Path, *args: str) -> list[str]:
    return ["pgbackrest", f"--config={config}", "--stanza=bench", *args]


def pgbackrest_full(ctx: Context, row: Row, config: Path, repo_bytes: Callable[[], int]) -> None:
    if not shutil.which("pgbackrest"):
        raise ToolUnavailable("pgbackrest is not installed (apt-get install pgbackrest; the benchmark does it as root)")
    ctx.prepare(row, pgbackrest_cmd(config, "stanza-create"), as_server=True)
    ctx.pg.set_archive_command(shlex.join(pgbackrest_cmd(config, "archive-push", "%p")))
    before = repo_bytes()
    ctx.timed(row, pgbackrest_cmd(config, "backup", "--type=full"), as_server=True)
    row.bytes = repo_bytes() - before


def pgbackrest_posix(ctx: Context, row: Row) -> None:
    repo = ctx.out_dir("pgbackrest-posix-repo", for_server=True)
    config = pgbackrest_config(ctx, "posix", [f"repo1-path={repo}"])
    pgbackrest_full(ctx, row, config, lambda: dir_bytes(repo))
    row.notes = f"zst:3, process-max={ctx.jobs}, start-fast; bytes = repo growth (backup + its WAL)"
    ctx.outputs[row.id] = config
    ctx.sizes[row.id] = row.bytes or 0


def pgbackrest_s3(ctx: Context, row: Row) -> None:
    if ctx.s3.tls_port is None:
        raise ToolUnavailable(f"pgBackRest only speaks https to S3 and there is no TLS endpoint: {ctx.s3.tls_note}")
    bucket = ctx.s3.new_bucket("pgbackrest")
    config = pgbackrest_config(ctx, "s3", [
        "repo1-type=s3", "repo1-path=/pgbackrest", f"repo1-s3-bucket={bucket}", "repo1-s3-endpoint=127.0.0.1",
        f"repo1-storage-port={ctx.s3.tls_port}", "repo1-s3-region=us-east-1", "repo1-s3-key=testing",
        "repo1-s3-key-secret=testing", "repo1-s3-uri-style=path", "repo1-storage-verify-tls=n"])
    pgbackrest_full(ctx, row, config, lambda: ctx.s3.bucket_bytes(bucket))
    row.notes = f"same settings, repo on moto S3 ({ctx.s3.tls_note}, verify-tls=n)"


def barman_cloud(ctx: Context, row: Row) -> None:
    if not shutil.which("barman-cloud-backup"):
        raise ToolUnavailable("barman-cloud-backup is not installed (apt-get install barman-cli-cloud; the "
                              "benchmark does it as root)")
    bucket = ctx.s3.new_bucket("barman")
    destination = f"s3://{bucket}/barman"
    ctx.pg.set_archive_command(f"barman-cloud-wal-archive --endpoint-url {ctx.s3.endpoint} -z {destination} bench %p")
    before = ctx.s3.bucket_bytes(bucket)
    ctx.timed(row, ["barman-cloud-backup", "--endpoint-url", ctx.s3.endpoint, "-z", "-J", str(ctx.jobs),
                    "--immediate-checkpoint", "-h", str(ctx.pg.socket_dir), "-p", str(ctx.pg.port), "-U", "postgres",
                    destination, "bench"], as_server=True)
    row.bytes = ctx.s3.bucket_bytes(bucket) - before
    row.notes = f"gzip (-z), -J {ctx.jobs} upload workers, immediate checkpoint; WAL via barman-cloud-wal-archive"


# --------------------------------------------------------------------------------------------- restores
def _pg_restore(ctx: Context, row: Row, source_id: str, jobs: int) -> None:
    source = ctx.outputs.get(source_id)
    if source is None:
        raise ToolUnavailable(f"no {source_id} dump to restore (that backup failed or was skipped)")
    db = f"restore_{row.id}"
    ctx.pg.psql(f"CREATE DATABASE {db} TEMPLATE template0", "postgres")
    try:
        ctx.timed(row, [ctx.pg.bin("pg_restore"), "-j", str(jobs), "-d", db, str(source)])
        row.notes = check_restored(ctx.pg, db, ctx.dataset)
    finally:
        ctx.pg.psql(f"DROP DATABASE IF EXISTS {db}", "postgres")
    row.bytes = dir_bytes(source)


def restore_fc_j1(ctx: Context, row: Row) -> None:
    _pg_restore(ctx, row, "pg_dump_fc", 1)


def restore_fc_j2(ctx: Context, row: Row) -> None:
    _pg_restore(ctx, row, "pg_dump_fc", ctx.jobs)


def restore_fd_j1(ctx: Context, row: Row) -> None:
    _pg_restore(ctx, row, "pg_dump_fd", 1)


def restore_fd_j2(ctx: Context, row: Row) -> None:
    _pg_restore(ctx, row, "pg_dump_fd", ctx.jobs)


def pgbackrest_restore(ctx: Context, row: Row) -> None:
    config = ctx.outputs.get("pgbackrest_posix")
    if config is None:
        raise ToolUnavailable("no pgBackRest posix backup to restore (that backup failed or pgbackrest is missing)")
    target = ctx.out_dir(row.id, for_server=True)
    try:
        ctx.timed(row, pgbackrest_cmd(config, f"--pg1-path={target}", "restore"), as_server=True)
        row.notes = (f"{dir_bytes(target) / 2**20:.0f} MiB data directory from the posix repo, "
                     f"process-max={ctx.jobs}; time only (not started)")
    finally:
        shutil.rmtree(target, ignore_errors=True)
    row.bytes = ctx.sizes["pgbackrest_posix"]


BACKUPS = (
    Tool("pg_dump_fc", "backup", "pg_dump -Fc", pg_dump_fc),
    Tool("cron_gzip_s3", "backup", "pg_dump | gzip + S3 upload (baseline)", cron_gzip_s3),
    Tool("pg_dump_fd", "backup", "pg_dump -Fd -j 2", pg_dump_fd),
    Tool("basebackup_gz", "backup", "pg_basebackup -Ft -z", basebackup_gz),
    Tool("basebackup_zstd", "backup", "pg_basebackup -Ft -Z client-zstd:3", basebackup_zstd),
    Tool("pgbackrest_posix", "backup", "pgBackRest full (posix repo)", pgbackrest_posix),
    Tool("pgbackrest_s3", "backup", "pgBackRest full (S3 repo)", pgbackrest_s3),
    Tool("barman_cloud", "backup", "barman-cloud-backup (S3)", barman_cloud),
)
RESTORES = (
    Tool("restore_fc_j1", "restore", "pg_restore -j 1 (from -Fc)", restore_fc_j1, needs=("pg_dump_fc",)),
    Tool("restore_fc_j2", "restore", "pg_restore -j 2 (from -Fc)", restore_fc_j2, needs=("pg_dump_fc",)),
    Tool("restore_fd_j1", "restore", "pg_restore -j 1 (from -Fd)", restore_fd_j1, needs=("pg_dump_fd",)),
    Tool("restore_fd_j2", "restore", "pg_restore -j 2 (from -Fd)", restore_fd_j2, needs=("pg_dump_fd",)),
    Tool("pgbackrest_restore", "restore", "pgBackRest restore (posix repo)", pgbackrest_restore,
         needs=("pgbackrest_posix",)),
)
