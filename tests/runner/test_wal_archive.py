"""The WAL archive against real storage (volume and moto S3) and a real PostgreSQL whose archive_command is
`pgbackup wal-push %p`: round trips, idempotency, conflicts, partials, gaps and the recoverability window."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgbackup.api import jobenv
from pgbackup.api.policy import Compression
from pgbackup.runner.backup.run import take_backup
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.cli.main import main
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.postgres.account import server_account
from pgbackup.runner.postgres.instance import ThrowawayPostgres
from pgbackup.runner.postgres.tools import server_installations
from pgbackup.runner.catalog.manifest import Manifest, PhysicalInfo
from pgbackup.runner.storage.pipeline import IdentityError, IntegrityError
from pgbackup.runner.storage.base import Storage
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.wal.archive import WalArchive, WalConflict
from pgbackup.runner.wal.window import format_gap
from pgbackup.runner.wal.xlog import WalSegment, next_segment, parse_segment_name
from tests.fixtures.postgres import SETTINGS, SUPERUSER, SUPERUSER_PASSWORD, PgServer, backup_policy, bindir_for
from tests.runner.storage_support import (  # noqa: F401 - fixtures
    AgeKey,
    age_key,
    fs_storage,
    other_age_key,
    overwrite,
    s3_storage,
    storage,
)

SEG = "000000010000000A000000F3"


def wal_file(directory: Path, name: str, content: bytes) -> Path:
    path = directory / name
    path.write_bytes(content)
    return path


def segment_bytes(tag: str, size: int = 256 * 1024) -> bytes:
    """Stand-in WAL content: repetitive like real WAL, distinct per tag."""
    return (tag.encode() * (size // len(tag) + 1))[:size]


@pytest.mark.parametrize("algorithm,encrypted", [("zstd", True), ("gzip", False), ("none", False)])
def test_push_fetch_round_trip_is_byte_identical(storage: Storage, tmp_path: Path, age_key: AgeKey,
                                                 algorithm: str, encrypted: bool) -> None:
    recipients = [age_key.recipient] if encrypted else []
    archive = WalArchive(storage, compression=Compression(algorithm=algorithm), recipients=recipients,
                         identity=age_key.identity if encrypted else None)
    content = os.urandom(64 * 1024) + segment_bytes("wal")
    source = wal_file(tmp_path, SEG, content)

    result = archive.push(source)

    suffix = {"zstd": ".zst", "gzip": ".gz", "none": ""}[algorithm] + (".age" if encrypted else "")
    assert result.uploaded and result.key == f"wal/00000001/{SEG}{suffix}"
    assert storage.exists(result.key)
    dest = tmp_path / "restored" / "RECOVERYXLOG"
    dest.parent.mkdir()
    assert archive.fetch(SEG, dest) is True
    assert dest.read_bytes() == content
    assert [s.name for s in archive.segments()] == [SEG]
    assert archive.last_archived() is not None and archive.last_archived().segment == parse_segment_name(SEG)


def test_re_push_of_identical_segment_succeeds_without_upload(fs_storage: FilesystemStorage, tmp_path: Path) -> None:
    source = wal_file(tmp_path, SEG, segment_bytes("same"))
    assert WalArchive(fs_storage, compression=Compression(algorithm="zstd")).push(source).uploaded
    before = sorted(o.key for o in fs_storage.list("wal/"))

    # the same file again, even from a runner configured differently: nothing is uploaded
    again = WalArchive(fs_storage, compression=Compression(algorithm="none")).push(source)

    assert not again.uploaded
    assert sorted(o.key for o in fs_storage.list("wal/")) == before


def test_different_segment_under_an_archived_name_is_a_conflict(storage: Storage, tmp_path: Path) -> None:
    archive = WalArchive(storage)
    original = segment_bytes("from server A")
    archive.push(wal_file(tmp_path, SEG, original))
    other = tmp_path / "other"
    other.mkdir()

    with pytest.raises(WalConflict, match=SEG):
        archive.push(wal_file(other, SEG, segment_bytes("from server B")))

    dest = tmp_path / "fetched"
    assert archive.fetch(SEG, dest) and dest.read_bytes() == original  # the archived copy is untouched


def test_partial_is_overwritten_then_superseded_by_the_full_segment(storage: Storage, tmp_path: Path) -> None:
    archive = WalArchive(storage)
    dest = tmp_path / "dest"
    archive.push_partial(wal_file(tmp_path, SEG + ".partial", segment_bytes("early")))
    archive.push_partial(wal_file(tmp_path, SEG + ".partial", segment_bytes("later")))

    assert archive.fetch(SEG, dest) is False  # a partial only when asked for
    assert archive.fetch(SEG, dest, allow_partial=True) and dest.read_bytes() == segment_bytes("later")
    assert [(s.name, s.partial) for s in archive.segments()] == [(SEG + ".partial", True)]
    assert archive.gaps() == [] and archive.last_archived() is None

    full = segment_bytes("final")
    assert archive.push(wal_file(tmp_path, SEG, full)).uploaded
    assert [(s.name, s.partial) for s in archive.segments()] == [(SEG, False)]
    assert not [o.key for o in storage.list("wal/") if ".partial" in o.key]
    assert not archive.push_partial(wal_file(tmp_path, SEG + ".partial", segment_bytes("late"))).uploaded
    assert archive.fetch(SEG, dest, allow_partial=True) and dest.read_bytes() == full


def test_history_and_backup_label_files_are_archived(fs_storage: FilesystemStorage, tmp_path: Path) -> None:
    archive = WalArchive(fs_storage)
    history = wal_file(tmp_path, "00000002.history", b"1\t0/3000000\tno recovery target specified\n")
    label = wal_file(tmp_path, f"{SEG}.00000028.backup", b"START WAL LOCATION: A/F3000028\n")
    archive.push(history)
    archive.push(label)
    assert archive.push(history).uploaded is False
    assert archive.history_files() == ["00000002.history"]
    assert archive.backup_labels() == [f"{SEG}.00000028.backup"]
    assert archive.segments() == []
    dest = tmp_path / "h"
    assert archive.fetch("00000002.history", dest) and dest.read_bytes() == history.read_bytes()


def test_encrypted_segment_needs_the_identity(fs_storage: FilesystemStorage, tmp_path: Path, age_key: AgeKey,
                                              other_age_key: AgeKey) -> None:
    WalArchive(fs_storage, recipients=[age_key.recipient]).push(wal_file(tmp_path, SEG, segment_bytes("secret")))
    with pytest.raises(IdentityError, match="identity"):
        WalArchive(fs_storage).fetch(SEG, tmp_path / "x")
    with pytest.raises(IdentityError):
        WalArchive(fs_storage, identity=other_age_key.identity).fetch(SEG, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_damaged_segment_is_never_handed_to_recovery(storage: Storage, tmp_path: Path) -> None:
    archive = WalArchive(storage)
    stored = archive.push(wal_file(tmp_path, SEG, segment_bytes("intact")))
    data = storage.get_bytes(stored.key)
    overwrite(storage, stored.key, data[: len(data) // 2])

    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError, match=SEG):
        archive.fetch(SEG, dest)
    assert not dest.exists() and not list(tmp_path.glob(".dest*"))


def test_gaps_and_delete(fs_storage: FilesystemStorage, tmp_path: Path) -> None:
    archive = WalArchive(fs_storage, compression=Compression(algorithm="none"))
    seg = parse_segment_name("0000000100000000000000FD")
    names = []
    for _ in range(6):  # FD, FE, FF, then 1/00, 1/01, 1/02: crosses a log boundary
        names.append(seg.name)
        archive.push(wal_file(tmp_path, seg.name, segment_bytes(seg.name, 1024)))
        seg = next_segment(seg)
    assert archive.gaps() == []

    archive.delete([names[2], names[3]])

    assert [format_gap(g) for g in archive.gaps()] == [f"{names[2]}-{names[3]}"]
    assert [s.name for s in archive.segments()] == [names[0], names[1], names[4], names[5]]


def test_segment_size_comes_from_the_archived_segments(fs_storage: FilesystemStorage, tmp_path: Path) -> None:
    """A cluster made with initdb --wal-segsize=1: 4096 segments per log, so ...00000FFF is followed by
    ...0100000000 (with 16 MiB segments that would look like a gap of 3840 segments)."""
    archive = WalArchive(fs_storage, compression=Compression(algorithm="zstd"))
    for name in ("000000010000000000000FFE", "000000010000000000000FFF", "000000010000000100000000"):
        archive.push(wal_file(tmp_path, name, segment_bytes(name, 1024 * 1024)))
    assert archive.segment_size() == 1024 * 1024
    assert archive.gaps() == []
    archive.delete(["000000010000000000000FFF"])
    assert [format_gap(g) for g in archive.gaps()] == ["000000010000000000000FFF"]


def _manifest(backup_id: str, completed_at: datetime, start: str, stop: str) -> Manifest:
    return Manifest(id=backup_id, policy="orders-db", namespace="shop", method="physical", started_at=completed_at,
                    completed_at=completed_at, objects=[], server_version="15.0", compression="zstd",
                    physical=PhysicalInfo(start_lsn="0/0", stop_lsn="0/0", timeline=1,
                                          start_wal_segment=start, stop_wal_segment=stop))


def test_recoverability_needs_the_base_backups_own_wal(fs_storage: FilesystemStorage, tmp_path: Path) -> None:
    archive = WalArchive(fs_storage, compression=Compression(algorithm="none"))
    segs = [WalSegment(1, 0, n) for n in range(2, 9)]  # 02..08
    for seg in segs:
        if seg.seg != 3:  # 03 never archived
            archive.push(wal_file(tmp_path, seg.name, segment_bytes(seg.name, 1024)))
    archive.push_partial(wal_file(tmp_path, WalSegment(1, 0, 9).name, segment_bytes("tail", 1024)))
    now = datetime.now(UTC)
    broken = _manifest("20261101T020000Z", now - timedelta(days=2), segs[0].name, segs[1].name)  # needs 02-03
    good = _manifest("20261102T020000Z", now - timedelta(days=1), segs[2].name, segs[3].name)  # needs 04-05

    first, last = archive.recoverability([broken, good])

    assert first == good.completed_at
    by_name = {s.name: s for s in archive.segments()}
    assert last == by_name[WalSegment(1, 0, 9).name + ".partial"].archived_at
    assert archive.recoverability([broken]) == (None, None)
    assert archive.recoverability([]) == (None, None)


# ---------------------------------------------------------------- the command line


def policy_file(tmp_path: Path, volume: Path, **spec: object) -> Path:
    document = {"name": "orders-db", "namespace": "shop", "spec": {
        "database": {"host": "127.0.0.1", "port": 5432, "credentialsSecret": {"name": "db"}},
        "schedule": "0 2 * * *", "storage": {"volume": {"claimName": "backups"}}, "retention": {"keepLast": 3},
        **spec}}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(document))
    return path


def test_cli_push_fetch_conflict_and_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    monkeypatch.setenv(jobenv.ENV_VOLUME_ROOT, str(volume))
    policy = str(policy_file(tmp_path, volume))
    segment = wal_file(tmp_path, SEG, segment_bytes("cli"))

    assert main(["wal-push", "--policy", policy, str(segment)]) == jobenv.EXIT_OK
    assert main(["wal-push", "--policy", policy, str(segment)]) == jobenv.EXIT_OK  # identical re-push
    (tmp_path / "b").mkdir()
    assert main(["wal-push", "--policy", policy, str(wal_file(tmp_path / "b", SEG, b"other"))]) == jobenv.EXIT_FAILED
    assert main(["wal-push", "--policy", policy, str(tmp_path / "000000010000000A000000F4")]) == jobenv.EXIT_FAILED

    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    assert main(["wal-fetch", "--policy", policy, SEG, str(dest)]) == jobenv.EXIT_OK
    assert dest.read_bytes() == segment.read_bytes()
    assert main(["wal-fetch", "--policy", policy, "000000010000000A000000F4", str(dest)]) == jobenv.EXIT_FAILED
    assert main(["wal-fetch", "--policy", policy, "00000002.history", str(tmp_path / "h")]) == jobenv.EXIT_FAILED


def test_cli_wal_fetch_reports_unreachable_storage_as_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.s3 import s3_env
    from tests.fixtures.postgres import free_port

    s3_env(monkeypatch)
    document = {"name": "orders-db", "namespace": "shop", "spec": {
        "database": {"host": "127.0.0.1", "port": 5432, "credentialsSecret": {"name": "db"}},
        "schedule": "0 2 * * *", "retention": {"keepLast": 3},
        "storage": {"s3": {"bucket": "nowhere", "endpoint": f"http://127.0.0.1:{free_port()}", "region": "us-east-1",
                           "forcePathStyle": True}}}}
    monkeypatch.setenv(jobenv.ENV_POLICY, json.dumps(document))
    assert main(["wal-fetch", SEG, str(tmp_path / "x")]) == jobenv.EXIT_NETWORK


# ---------------------------------------------------------------- a real archive_command


def pgbackup_for(account: tuple[int, int] | None) -> str:
    """The `pgbackup` command as the server's account can run it: the venv's entry point, or (when the venv's
    interpreter lives where that account cannot reach, e.g. under /root) the same code on the system Python of
    the same minor version."""
    installed = str(Path(sys.executable).parent / "pgbackup")
    extra: dict[str, object] = {"user": account[0], "group": account[1], "extra_groups": []} if account else {}
    try:
        probe = subprocess.run([installed, "--help"], capture_output=True, cwd="/", **extra)  # type: ignore[call-overload]
        if probe.returncode == 0:
            return installed
    except PermissionError:
        pass
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/usr/local/bin")
    if system is None:
        pytest.skip(f"the server account cannot run {installed} and there is no system Python "
                    f"{sys.version_info.major}.{sys.version_info.minor}")
    import pgbackup

    code = Path(pgbackup.__file__).parent.parent
    site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    return f"env PYTHONPATH={code}:{site} {system} -m pgbackup.runner"


@pytest.fixture(scope="module")
def archiving_server() -> Iterator[tuple[PgServer, Path, Path]]:
    """PostgreSQL 15 with archive_command = 'pgbackup wal-push %p' into a volume directory."""
    bindir = bindir_for("15")
    if bindir is None:
        pytest.skip("PostgreSQL 15 binaries are not installed (run scripts/install-deps.sh)")
    tools = next(t for t in server_installations({}) if t.bindir == bindir)
    base = Path(tempfile.mkdtemp(prefix="pgbackup-test-walarchive-"))  # pytest's tmp dirs are root-only
    os.chmod(base, 0o755)
    volume = base / "volume"
    volume.mkdir()
    account = server_account()
    if account is not None:  # the server (an unprivileged account) runs archive_command
        os.chown(volume, *account)
    policy = base / "policy.json"
    command = f"env {jobenv.ENV_VOLUME_ROOT}={volume} {pgbackup_for(account)} wal-push --policy {policy} %p"
    instance = ThrowawayPostgres.create(
        tools=tools, superuser=SUPERUSER, replication=True, password=SUPERUSER_PASSWORD,
        settings={**SETTINGS, "archive_mode": "on", "archive_command": f"'{command}'"})
    instance.stop_modes = ("immediate",)
    server = PgServer("15", instance)
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, method="physical",
                             compression={"algorithm": "zstd"})
    policy.write_text(json.dumps(document))
    os.chmod(policy, 0o644)
    try:
        server.start()
        yield server, volume, policy
    finally:
        server.close()
        shutil.rmtree(base, ignore_errors=True)


def switch_wal(server: PgServer, rows: int = 100) -> str:
    server.query(f"CREATE TABLE IF NOT EXISTS t (i int); INSERT INTO t SELECT generate_series(1, {rows})")
    ((name,),) = server.query("SELECT pg_walfile_name(pg_switch_wal())")
    return str(name)


def test_real_archive_command_pushes_every_segment(archiving_server: tuple[PgServer, Path, Path],
                                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    server, volume, policy_path = archiving_server
    policy = policy_from_document(json.loads(policy_path.read_text()), "test")
    monkeypatch.setenv("PGUSER", server.user)
    monkeypatch.setenv("PGPASSWORD", server.password)
    monkeypatch.setenv(jobenv.ENV_SCRATCH, str(tmp_path))
    storage = FilesystemStorage(volume)
    archive = WalArchive(storage)
    outcome = take_backup(policy, storage)  # a real base backup: pg_basebackup, then .backup label archived
    switched = [switch_wal(server) for _ in range(4)]
    server.wait_archived(switched[-1])

    archived = {s.name: s for s in archive.segments()}
    assert set(switched) <= set(archived)
    assert archive.gaps() == []
    assert archive.backup_labels(), "the base backup's .backup history file is archived too"
    pg_wal = server.datadir / "pg_wal"
    fetched = tmp_path / "fetched"
    assert archive.fetch(switched[-1], fetched)
    assert fetched.read_bytes() == (pg_wal / switched[-1]).read_bytes()

    physical = outcome.manifest.physical
    assert physical is not None and physical.start_wal_segment in archived
    first, last = archive.recoverability(Catalog(storage).backups())
    assert first == outcome.manifest.completed_at
    assert last == archived[switched[-1]].archived_at

    # a segment disappears from storage: the gap is reported and the window ends just before it
    missing = switched[1]
    archive.delete([missing])
    assert [format_gap(g) for g in archive.gaps()] == [missing]
    _, last_after = archive.recoverability(Catalog(storage).backups())
    assert last_after == archived[switched[0]].archived_at

    # and restore_command for it says "not here" (exit 1): PostgreSQL then ends recovery or tries streaming
    code = main(["wal-fetch", "--policy", str(policy_path), missing, str(tmp_path / "RECOVERYXLOG")])
    assert code == jobenv.EXIT_FAILED
