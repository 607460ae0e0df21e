"""Point-in-time recovery: pick the newest physical base backup before the target, check that the WAL archive
covers the way from it to the target, restore it into a throwaway data directory, replay archived WAL up to the
target (`restore_command = 'pgbackup wal-fetch %f %p'`, recovery_target_*, promote), then either leave the
recovered data directory in place or copy the recovered database logically into a new database on any server.

Everything that can be checked before changing something is checked first (plan_pitr): a target outside the
recoverability window is an error that names the window, and no target database or directory is touched.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from psycopg import sql

from pgbackup.runner.common.timestamps import assume_utc, format_utc
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.errors import RunnerError, UsageError, program_ended
from pgbackup.runner.postgres.account import make_workspace, reachable, server_account
from pgbackup.runner.postgres.instance import ThrowawayPostgres
from pgbackup.runner.common.log import log
from pgbackup.runner.catalog.manifest import Manifest
from pgbackup.runner.postgres.children import run_pipe
from pgbackup.runner.postgres.facts import count_rows, list_databases, server_info
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.privileges import require_createdb
from pgbackup.runner.postgres.tools import find_tools, major_of, server_tools
from pgbackup.runner.restore.chain import newest_whole
from pgbackup.runner.restore.physical import restore_physical
from pgbackup.runner.wal.archive import WalArchive
from pgbackup.runner.wal.listing import ArchivedSegment
from pgbackup.runner.wal.xlog import (
    DEFAULT_SEGMENT_SIZE,
    format_lsn,
    infer_segment_size,
    parse_lsn,
    parse_segment_name,
    segment_from_number,
)

class PitrOutOfRange(UsageError):
    """The target lies outside what the base backups and the WAL archive can recover."""

    reason = "PointInTimeOutOfRange"


def segment_size_of(manifest: Manifest) -> int:
    """The server's wal_segment_size, read back from the start LSN and the segment name pg_basebackup reported
    (the default when that does not tell)."""
    info = manifest.physical
    if info is None or not info.start_wal_segment:
        return DEFAULT_SEGMENT_SIZE
    return infer_segment_size(parse_lsn(info.start_lsn), info.timeline, info.start_wal_segment) or DEFAULT_SEGMENT_SIZE


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PitrTarget:
    """Exactly one of `time` (timezone-aware) or `lsn` ('0/3000060')."""

    time: datetime | None = None
    lsn: str | None = None
    inclusive: bool = True

    def __post_init__(self) -> None:
        if (self.time is None) == (self.lsn is None):
            raise UsageError("a point-in-time restore needs exactly one of a target time or a target LSN")
        if self.lsn is not None:
            try:
                parse_lsn(self.lsn)
            except ValueError:
                raise UsageError(f"target LSN {self.lsn!r} is not a WAL position like 0/3000060") from None
        if self.time is not None and self.time.tzinfo is None:
            object.__setattr__(self, "time", assume_utc(self.time))

    def describe(self) -> str:
        return f"time {_when(self.time)}" if self.time is not None else f"LSN {self.lsn}"

    def recovery_settings(self) -> dict[str, str]:
        """postgresql.conf lines (values quoted) that stop replay at this target."""
        settings = {"recovery_target": "''", "recovery_target_inclusive": "on" if self.inclusive else "off"}
        if self.time is not None:
            settings["recovery_target_time"] = _quote(self.time.astimezone(UTC).isoformat())
        else:
            settings["recovery_target_lsn"] = _quote(str(self.lsn))
        return settings


@dataclass(frozen=True)
class PitrPlan:
    backup_id: str
    timeline: int
    wal_from: str
    wal_to: str
    target: PitrTarget
    first_point: datetime
    """When the oldest usable base backup ended: nothing earlier can be recovered."""
    last_point: datetime
    """When the last WAL segment of the unbroken run after the base backup was archived."""
    segment_size: int
    steps: list[str] = field(default_factory=list)
    uses_partial: bool = False
    """Replay may need the streamer's .partial of the newest segment (wal-fetch --allow-partial)."""


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "?"
    return format_utc(moment)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _bases(backups: list[Manifest]) -> list[Manifest]:
    bases = [m for m in backups if m.method == "physical" and m.physical is not None]
    return sorted(bases, key=lambda m: m.completed_at, reverse=True)


def plan_pitr(catalog: Catalog, archive: WalArchive, target: PitrTarget) -> PitrPlan:
    """Which base backup and WAL reach `target`, or PitrOutOfRange naming the recoverable window."""
    backups = catalog.backups()
    bases = _bases(backups)
    where = catalog.storage.url
    if not bases:
        raise PitrOutOfRange(f"the catalog at {where} holds no physical base backup: point-in-time recovery starts "
                             f"from one. Take a backup with method 'physical' while WAL archiving is on")
    oldest = bases[-1]
    assert oldest.physical is not None
    if target.time is not None:
        eligible = [b for b in bases if b.completed_at <= target.time]
        if not eligible:
            raise PitrOutOfRange(f"target {target.describe()} is before the first recoverable point "
                                 f"{_when(oldest.completed_at)} (the end of the oldest base backup {oldest.id}); "
                                 f"choose a later target")
    else:
        wanted = parse_lsn(str(target.lsn))
        eligible = [b for b in bases if b.physical is not None and parse_lsn(b.physical.stop_lsn) <= wanted]
        if not eligible:
            raise PitrOutOfRange(f"target {target.describe()} is before the first recoverable point "
                                 f"{oldest.physical.stop_lsn} (the end of the oldest base backup {oldest.id}, "
                                 f"{_when(oldest.completed_at)}); choose a later target")
    base = newest_whole(eligible, backups)
    info = base.physical
    assert info is not None
    size = segment_size_of(base)
    start = parse_lsn(info.start_lsn) // size
    stop = parse_lsn(info.stop_lsn) // size
    archived: dict[int, ArchivedSegment] = {}
    partials: dict[int, ArchivedSegment] = {}
    for segment in archive.segments():
        if segment.timeline < info.timeline:
            continue
        if segment.partial:
            partials[parse_segment_name(segment.name).number(size)] = segment
            continue
        number = parse_segment_name(segment.name).number(size)
        if number not in archived or segment.timeline > archived[number].timeline:
            archived[number] = segment
    # Segments start..stop travel inside the base backup's tar (pg_basebackup -X fetch): replay can start from them.
    end = start
    while end + 1 <= stop or end + 1 in archived:
        end += 1
    last_archived = [archived[n].archived_at for n in range(start, end + 1) if n in archived]
    last_point = max([base.completed_at, *last_archived])
    last_name = archived[end].name if end in archived else segment_from_number(info.timeline, end, size).name
    # The streamer's .partial of the next segment extends the window up to when it was shipped.
    partial = partials.get(end + 1)
    if partial is not None:
        last_point, last_name = max(last_point, partial.archived_at), partial.name
    missing = next((n for n in sorted(archived) if n > end), None)
    gap_hint = (f"; segment {segment_from_number(info.timeline, end + 1, size).name} is missing from the archive (a gap), so "
                f"later WAL cannot be replayed" if missing is not None else "")
    if target.time is not None:
        if target.time > last_point:
            raise PitrOutOfRange(f"target {target.describe()} is after the last archived WAL at {_when(last_point)} "
                                 f"(segment {last_name}){gap_hint}; wait until archiving has caught up or choose "
                                 f"an earlier target")
        wal_to_number = end + 1 if partial is not None else end
    else:
        wanted = parse_lsn(str(target.lsn))
        covered = (end + (2 if partial is not None else 1)) * size
        if wanted >= covered:
            raise PitrOutOfRange(f"target {target.describe()} is after the last archived WAL at {format_lsn(covered)} "
                                 f"(end of segment {last_name}, archived {_when(last_point)}){gap_hint}; wait until "
                                 f"archiving has caught up or choose an earlier target")
        wal_to_number = wanted // size
    wal_from = segment_from_number(info.timeline, start, size).name
    wal_to = (archived[wal_to_number].name if wal_to_number in archived
              else partials[wal_to_number].name if wal_to_number in partials
              else segment_from_number(info.timeline, wal_to_number, size).name)
    steps = [f"restore base backup {base.id} (ended {_when(base.completed_at)}, {info.stop_lsn}) into a throwaway "
             f"data directory",
             f"replay archived WAL {wal_from} .. {wal_to} via 'pgbackup wal-fetch' up to {target.describe()}",
             "promote the recovered server"]
    plan = PitrPlan(backup_id=base.id, timeline=info.timeline, wal_from=wal_from, wal_to=wal_to, target=target,
                    first_point=oldest.completed_at, last_point=last_point, segment_size=size, steps=steps,
                    uses_partial=partial is not None and (target.time is not None or wal_to_number > end))
    log("pitr.plan", backup_id=plan.backup_id, wal_from=wal_from, wal_to=wal_to, target=target.describe(),
        first_point=_when(plan.first_point), last_point=_when(last_point))
    return plan


# ---------------------------------------------------------------- the restore


def runner_program(account: tuple[int, int] | None = None) -> tuple[list[str], dict[str, str]]:
    """argv prefix and extra environment with which the server's account runs this runner (for restore_command /
    archive_command). Our own interpreter when that account may run it; else (root on a developer machine, the
    interpreter under a private home) the system Python of the same version with our import path."""
    own = [sys.executable, "-m", "pgbackup.runner"]
    if account is None or reachable(Path(sys.executable).resolve(), account):
        return own, {}
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists():
        return own, {}
    paths = [p for p in sys.path if p and Path(p).is_dir() and not p.startswith(sys.base_prefix)]
    return [str(system), "-m", "pgbackup.runner"], {"PYTHONPATH": os.pathsep.join(paths)}


def wal_fetch_command(program: Sequence[str] | None = None, *, allow_partial: bool = False) -> str:
    """restore_command running this runner's `wal-fetch` (the server substitutes %f and %p)."""
    argv = list(program) if program is not None else runner_program(server_account())[0]
    return shlex.join([*argv, "wal-fetch", *(["--allow-partial"] if allow_partial else []), "%f", "%p"])


@dataclass
class PitrReport:
    plan: PitrPlan
    target: str
    """The data directory, or host:port/database."""
    databases: dict[str, str] = field(default_factory=dict)
    """Recovered database -> target database (logical copies)."""
    row_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Target database -> rows per table after the copy."""
    duration_seconds: float = 0.0


def _check_target_databases(target: ConnParams, names: Iterable[str]) -> None:
    with target.connect("postgres") as conn:
        require_createdb(conn, target)
        for name in names:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                raise UsageError(f"database {name!r} already exists on {target.describe()}: a point-in-time restore "
                                 f"only creates a new database; choose another --target-database or drop it first",
                                 reason="TargetDatabaseExists")


def restore_to_point(catalog: Catalog, archive: WalArchive, target: PitrTarget, *, identity: str | None = None,
                     target_dir: Path | None = None, target_conn: ConnParams | None = None,
                     target_database: str | None = None, source_database: str | None = None,
                     scratch: Path | None = None, server_env: Mapping[str, str] | None = None,
                     restore_command: str | None = None, login_roles: Sequence[str] = (),
                     on_plan: Callable[[PitrPlan], None] | None = None,
                     environ: Mapping[str, str] | None = None, no_privileges: bool = False) -> PitrReport:
    """Recover `target` into `target_dir` (a new data directory left stopped, ready for pg_ctl start) or into
    the new database `target_database` on `target_conn` (a logical copy of `source_database` of the recovered
    cluster). `server_env` is what the throwaway server's restore_command (`pgbackup wal-fetch`) needs: the
    policy and storage credentials. `on_plan` sees the plan before anything changes (status first). The copy is
    restored without owners (pg_restore --no-owner), with `no_privileges` without GRANTs too."""
    started = time.monotonic()
    if (target_dir is None) == (target_database is None):
        raise UsageError("a point-in-time restore goes either into a new data directory (--target-dir) or into a new "
                         "database (--target-database)")
    plan = plan_pitr(catalog, archive, target)
    if on_plan is not None:
        on_plan(plan)
    if target_dir is not None and target_dir.exists() and any(target_dir.iterdir()):
        raise UsageError(f"{target_dir} is not empty: a point-in-time restore needs a new, empty data directory",
                         reason="TargetDirectoryNotEmpty")
    if target_database is not None:
        if target_conn is None:
            raise UsageError("a point-in-time restore into a database needs the target server")
        _check_target_databases(target_conn, [target_database])
    # The base backup's own major replays its WAL: found before anything is downloaded.
    tools = server_tools(major_of(catalog.get(plan.backup_id).server_version), environ=environ)
    recovery = {**target.recovery_settings(), "restore_command": _quote(restore_command or wal_fetch_command(allow_partial=plan.uses_partial)),
                "recovery_target_action": "'promote'", "recovery_target_timeline": "'latest'"}
    workspace = None
    if target_dir is not None:
        datadir = target_dir
    else:
        workspace = make_workspace(scratch, prefix="pgbackup-pitr-", account=server_account())
        datadir = workspace / "data"
    report = PitrReport(plan=plan, target=str(target_dir) if target_dir is not None else "")
    try:
        restore_physical(catalog, plan.backup_id, datadir, identity, environ)
        auto_conf = datadir / "postgresql.auto.conf"
        original_auto = auto_conf.read_bytes() if auto_conf.exists() else None
        server = ThrowawayPostgres.from_data_dir(datadir, tools=tools, login_roles=login_roles,
                                                 remove_data=target_dir is None, recovery=recovery,
                                                 server_env=server_env)
        try:
            log("pitr.replay.start", backup_id=plan.backup_id, target=target.describe(), datadir=str(datadir))
            server.start()
            log("pitr.replay.done", backup_id=plan.backup_id, target=target.describe(),
                seconds=round(time.monotonic() - started, 3))
            if target_database is not None and target_conn is not None:
                source = _pick_source(server, source_database)
                report.databases[source] = target_database
                report.row_counts[target_database] = _copy_database(server, source, target_conn, target_database,
                                                                    environ, no_privileges)
                report.target = f"{target_conn.host}:{target_conn.port}/{target_database}"
        finally:
            server.close()
        if target_dir is not None:
            _hand_over(datadir, original_auto, server.logfile)
    except BaseException:
        if target_dir is not None:  # it was empty before: leave no half-recovered cluster behind
            _empty(target_dir)
        raise
    finally:
        if workspace is not None:
            shutil.rmtree(workspace, ignore_errors=True)
    report.duration_seconds = round(time.monotonic() - started, 3)
    log("pitr.done", backup_id=plan.backup_id, target=report.target, duration_seconds=report.duration_seconds)
    return report


def _empty(directory: Path) -> None:
    for child in directory.iterdir() if directory.is_dir() else ():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _hand_over(datadir: Path, original_auto: bytes | None, logfile: Path) -> None:
    """Take the throwaway server's settings (our port, hba file, socket dir) out of a directory left for the user."""
    auto_conf = datadir / "postgresql.auto.conf"
    if original_auto is None:
        auto_conf.unlink(missing_ok=True)
    else:
        auto_conf.write_bytes(original_auto)
    for name in ("recovery.signal", "standby.signal"):
        (datadir / name).unlink(missing_ok=True)
    logfile.unlink(missing_ok=True)


def _pick_source(server: ThrowawayPostgres, wanted: str | None) -> str:
    with server.connect() as conn:
        names = [n for n in list_databases(conn) if n != "postgres"]
    if wanted is not None:
        if wanted not in names and wanted != "postgres":
            raise UsageError(f"the recovered cluster has no database {wanted!r}; it holds {', '.join(names) or 'none'}")
        return wanted
    if len(names) != 1:
        raise UsageError(f"the recovered cluster holds {len(names)} databases ({', '.join(names)}): choose one with "
                         f"--source-database")
    return names[0]


def _copy_database(server: ThrowawayPostgres, source: str, target: ConnParams, database: str,
                   environ: Mapping[str, str] | None, no_privileges: bool) -> dict[str, int]:
    """pg_dump -Fc from the recovered server piped into pg_restore into a NEW database on `target`."""
    with target.connect("postgres") as conn:
        target_major = server_info(conn).major
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(database)))
    try:
        tools = find_tools(max(target_major, server.tools.major), environ)
        source_params = server.conn_params()
        piped = run_pipe([tools.path("pg_dump"), "-Fc", "--no-password", "-d", source],
                         [tools.path("pg_restore"), "--no-password", "--exit-on-error", "--no-owner",
                          *(["--no-privileges"] if no_privileges else []), "-d", database],
                         producer_env=source_params.child_env(source), consumer_env=target.child_env(database))
        dump_code = piped.producer_code
        if dump_code != 0 or piped.consumer_code != 0:
            detail = piped.producer_stderr.strip() if dump_code != 0 else target.scrub(piped.consumer_stderr.strip())
            raise RunnerError(f"copying the recovered database {source!r} into {database!r} on {target.describe()} "
                              f"failed: {'pg_dump' if dump_code else 'pg_restore'} "
                              f"{program_ended(dump_code or piped.consumer_code, detail)}; the new database was dropped",
                              reason="RestoreFailed")
        with target.connect(database) as conn:
            return count_rows(conn)
    except BaseException:
        with target.connect("postgres") as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        raise


def policy_server_env(policy_json: str, environ: Mapping[str, str]) -> dict[str, str]:
    """What `pgbackup wal-fetch` needs inside the throwaway server: the policy, the storage location and
    credentials, the age identity. Passed through the server's environment, never its argument list."""
    env = {k: v for k, v in environ.items() if k.startswith(("PGBACKUP_", "AWS_"))}
    env["PGBACKUP_POLICY"] = policy_json
    env.update(runner_program(server_account())[1])
    return env
