"""Incremental physical backups on PostgreSQL 18 (summarize_wal = on, WAL archived with `pgbackup wal-push`):
a chain full -> rows -> incremental -> rows -> incremental (fullEvery 3, so the fourth backup is full again),
restored through pg_combinebackup, verified, recovered to a point in time between two incrementals, and kept whole
by retention."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyrage
import pytest
import zstandard

from pgbackup.api.policy import Retention, SqlCheck, VerifySpec
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.chains import ChainIncomplete
from pgbackup.runner.catalog.manifest import MANIFEST_NAME, Manifest
from pgbackup.runner.catalog.retention import BASE_OF, BackupRef, plan_retention, prune_backups
from pgbackup.runner.cli import main as cli
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.postgres.account import server_account
from pgbackup.runner.postgres.instance import ThrowawayPostgres
from pgbackup.runner.postgres.tools import server_installations
from pgbackup.runner.restore.physical import restore_physical
from pgbackup.runner.restore.pitr import PitrTarget, plan_pitr, policy_server_env, restore_to_point, runner_program
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.verify.run import verify_backup
from pgbackup.runner.wal.archive import WalArchive
from pgbackup.runner.wal.retention import retention_cutoff
from tests.fixtures.postgres import (
    SETTINGS,
    SUPERUSER,
    SUPERUSER_PASSWORD,
    PgFactory,
    PgServer,
    backup_policy,
    bindir_for,
    runner_env,
    start_cluster_from,
)

PGBACKUP, PGBACKUP_ENV = runner_program(server_account())


@dataclass
class Chain:
    server: PgServer
    policy: dict
    volume: Path
    env: dict[str, str]
    ids: list[str]
    """full, incremental, incremental, full (fullEvery 3)."""
    between: datetime
    """A moment after the first incremental's rows (batch 2 committed) and before batch 3."""

    def catalog(self, volume: Path | None = None) -> Catalog:
        return Catalog(FilesystemStorage(volume or self.volume))

    def manifests(self) -> list[Manifest]:
        return [self.catalog().get(backup_id) for backup_id in self.ids]


def _batches(server: PgServer | ThrowawayPostgres) -> dict[int, int]:
    with server.connect("postgres") as conn:
        return dict(conn.execute("SELECT batch, count(*) FROM t GROUP BY batch ORDER BY batch").fetchall())


def _backup(policy: dict) -> str:
    code, summary = backup_command(policy_from_document(policy, "test"))
    assert code == 0, summary.error
    return str(summary.backup_id)


def _insert(server: PgServer, batch: int, rows: int) -> None:
    server.query(f"INSERT INTO t (batch) SELECT {batch} FROM generate_series(1, {rows})")


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    bindir = bindir_for("18")
    if bindir is None:
        pytest.skip("PostgreSQL 18 binaries are not installed")
    tools = next(t for t in server_installations({}) if t.bindir == bindir)
    root = Path(tempfile.mkdtemp(prefix="pgbackup-test-incremental-"))
    os.chmod(root, 0o755)
    volume, scratch = root / "volume", root / "scratch"
    for path in (volume, scratch):
        path.mkdir()
        os.chmod(path, 0o777)  # the server account archives into the volume (archive_command runs as the server)
    archive_command = shlex.join([*PGBACKUP, "wal-push", "%p"])
    instance = ThrowawayPostgres.create(tools=tools, scratch=root, superuser=SUPERUSER, replication=True,
                                        password=SUPERUSER_PASSWORD,
                                        settings={**SETTINGS, "archive_mode": "on", "summarize_wal": "on",
                                                  "archive_command": "'" + archive_command + "'"})
    instance.stop_modes = ("immediate",)
    server = PgServer("18", instance)
    policy = backup_policy(server, {"volume": {"claimName": "backups"}}, method="physical",
                           physical={"fullEvery": 3}, retention={"keepLast": 10})
    policy_json = json.dumps(policy)
    env = {"PGUSER": server.user, "PGPASSWORD": server.password, "PGBACKUP_VOLUME_ROOT": str(volume),
           "PGBACKUP_SCRATCH": str(scratch), "PGBACKUP_SUMMARY_FILE": str(root / "summary"),
           "PGBACKUP_POLICY": policy_json}
    instance.server_env = {"PGBACKUP_POLICY": policy_json, "PGBACKUP_VOLUME_ROOT": str(volume), **PGBACKUP_ENV}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGPASSFILE", "PGSERVICE", "PGBACKUP_PG_BINDIR"):
                patch.delenv(name, raising=False)
            for name, value in env.items():
                patch.setenv(name, value)
            server.start()
            server.query("CREATE TABLE t (id serial PRIMARY KEY, batch int NOT NULL, pad text)")
            _insert(server, 0, 2000)
            full = _backup(policy)
            _insert(server, 1, 10)
            first = _backup(policy)
            _insert(server, 2, 5)
            server.query("SELECT pg_sleep(0.3)")  # commit timestamps on both sides of the target differ clearly
            ((between,),) = server.query("SELECT now()")
            server.query("SELECT pg_sleep(0.3)")
            _insert(server, 3, 7)
            second = _backup(policy)
            stop = Catalog(FilesystemStorage(volume)).get(second).physical.stop_wal_segment  # type: ignore[union-attr]
            server.wait_archived(str(stop))  # the WAL up to the second incremental (and past the target)
            again = _backup(policy)
            yield Chain(server, policy, volume, env, [full, first, second, again], between)
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def chain_env(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> Chain:
    for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGPASSFILE", "PGSERVICE", "PGBACKUP_PG_BINDIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in chain.env.items():
        monkeypatch.setenv(name, value)
    return chain


def _volume_copy(chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the chain's storage that a test may change; the runner's env points at it."""
    volume = tmp_path / "chain-volume"
    shutil.copytree(chain.volume, volume)
    monkeypatch.setenv("PGBACKUP_VOLUME_ROOT", str(volume))
    return volume


def test_backups_form_chains_as_full_every_says(chain_env: Chain, capsys: pytest.CaptureFixture[str]) -> None:
    full, first, second, again = chain_env.manifests()

    assert [m.backup_type for m in (full, first, second, again)] == ["full", "incr", "incr", "full"]
    links = [(m.physical.incremental_of, m.physical.chain_root, m.physical.chain_length)  # type: ignore[union-attr]
             for m in (full, first, second, again)]
    assert links == [(None, full.id, 1), (full.id, full.id, 2), (first.id, full.id, 3), (None, again.id, 1)]
    assert "no earlier physical backup" in str(full.physical.full_reason)  # type: ignore[union-attr]
    assert "fullEvery 3" in str(again.physical.full_reason)  # type: ignore[union-attr]
    assert first.physical.full_reason is None  # type: ignore[union-attr]
    assert f"INCREMENTAL FROM LSN: {first.physical.start_lsn}" in second.physical.backup_label  # type: ignore[union-attr]
    assert second.size_bytes < full.size_bytes / 4  # the changed blocks and the backup's WAL, not the cluster
    assert all(m.backup_manifest_object() is not None for m in (full, first, second, again))
    with chain_env.catalog().open_object(second, second.backup_manifest_object()) as stream:  # type: ignore[arg-type]
        assert b'"Checksum-Algorithm": "CRC32C"' in stream.read()  # unencrypted policy: pg_basebackup's default

    assert cli.main(["list"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows[second.id][3:6] == ["incr", full.id, "#3"]
    assert rows[again.id][3:6] == ["full", again.id, "#1"]


def test_an_incremental_backup_restores_through_its_chain_and_verifies(chain_env: Chain, scratch: Path) -> None:
    """Verification restores the second incremental (full + both incrementals combined by pg_combinebackup) into
    a throwaway server: it holds exactly the rows of every batch committed before it."""
    rows = SqlCheck(name="rows", database="postgres",
                    sql="SELECT array_agg(batch || ':' || n ORDER BY batch) = '{0:2000,1:10,2:5,3:7}' "
                        "FROM (SELECT batch, count(*) AS n FROM t GROUP BY batch) AS b")

    outcome = verify_backup(chain_env.catalog(), chain_env.ids[2], VerifySpec(enabled=True, checks=[rows]),
                            identity=None, scratch_dir=scratch, environ={"PGUSER": chain_env.server.user})

    assert (outcome.record.phase, outcome.record.reason) == ("Passed", "RestoreVerified"), outcome.record.message
    assert {c.name for c in outcome.record.checks} == {"recovery", "rows"}
    assert list(scratch.iterdir()) == []  # the chain's extracted members went with the throwaway server


def test_pitr_recovers_through_a_chain(chain_env: Chain, pg_factory: PgFactory) -> None:
    datadir = pg_factory.new_datadir("incremental-pitr")

    report = restore_to_point(chain_env.catalog(), WalArchive(FilesystemStorage(chain_env.volume)),
                              PitrTarget(time=chain_env.between), target_dir=datadir,
                              server_env=policy_server_env(json.dumps(chain_env.policy), os.environ),
                              restore_command=shlex.join([*PGBACKUP, "wal-fetch", "%f", "%p"]),
                              login_roles=[SUPERUSER])

    assert report.plan.backup_id == chain_env.ids[1]  # the newest before the target: the first incremental
    assert [p.name for p in datadir.parent.iterdir()] == ["data"]  # the chain's extracted members are gone
    recovered = pg_factory.adopt(start_cluster_from(chain_env.server, datadir))
    try:
        assert _batches(recovered) == {0: 2000, 1: 10, 2: 5}
    finally:
        recovered.stop()


class _ManifestReads(FilesystemStorage):
    """The chain's volume, noting whose manifests are read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.manifests_read: list[str] = []

    def get_bytes(self, key: str) -> bytes:
        if key.endswith(f"/{MANIFEST_NAME}"):
            self.manifests_read.append(key.split("/")[0])
        return super().get_bytes(key)


def test_restoring_an_incremental_reads_only_the_manifests_of_its_chain(chain_env: Chain,
                                                                       pg_factory: PgFactory) -> None:
    """One read per chain member (on S3 one GET each), not one per backup of the policy."""
    storage = _ManifestReads(chain_env.volume)
    target = pg_factory.new_datadir("incremental-reads")

    restore_physical(Catalog(storage), chain_env.ids[2], target)

    assert sorted(set(storage.manifests_read)) == sorted(chain_env.ids[:3])  # not the later full backup
    assert (target / "PG_VERSION").is_file()


def test_a_missing_chain_member_fails_before_the_target_is_touched(chain_env: Chain, pg_factory: PgFactory,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    volume = _volume_copy(chain_env, tmp_path, monkeypatch)
    shutil.rmtree(volume / chain_env.ids[1])  # the first incremental, which the second builds on
    target = pg_factory.new_datadir("incremental-broken")
    target.mkdir()

    with pytest.raises(ChainIncomplete) as raised:
        restore_physical(chain_env.catalog(volume), chain_env.ids[2], target)

    assert f"backup {chain_env.ids[1]} of its chain" in str(raised.value)
    assert "Nothing was restored or changed" in str(raised.value)
    assert list(target.iterdir()) == []
    assert [p.name for p in target.parent.iterdir()] == ["data"]
    # point-in-time recovery to the end of the broken incremental starts from the older, whole chain instead
    plan = plan_pitr(chain_env.catalog(volume), WalArchive(FilesystemStorage(volume)),
                     PitrTarget(time=chain_env.catalog(volume).get(chain_env.ids[2]).completed_at))
    assert plan.backup_id == chain_env.ids[0]


def test_check_of_an_incremental_checks_every_backup_it_builds_on(chain_env: Chain, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    full, first, second, _ = chain_env.ids
    assert cli.main(["check", second]) == 0
    out = capsys.readouterr().out
    assert f"which builds on backup {first}: all" in out and f"which builds on backup {full}: all" in out

    volume = _volume_copy(chain_env, tmp_path, monkeypatch)
    base = chain_env.catalog(volume).get(full).object_by_kind("base")[0]
    stored = volume / full / base.key
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    assert cli.main(["check", second]) == 1
    out = capsys.readouterr().out
    assert f"which builds on backup {full}: 1 of" in out and f"{base.key}: corrupt" in out

    shutil.rmtree(volume / first)
    assert cli.main(["check", second, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["chain"], report["chain_missing"]) == (False, [], f"backup {first}: missing (deleted)")


def test_retention_keeps_every_backup_a_kept_incremental_builds_on(chain_env: Chain, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    full, first, second, again = chain_env.ids
    volume = _volume_copy(chain_env, tmp_path, monkeypatch)
    catalog = chain_env.catalog(volume)

    shutil.rmtree(volume / again)  # the second incremental is now the newest backup
    pruned = prune_backups(catalog, Retention(keep_last=1), datetime.now().astimezone())

    kept = {d.id: d.reasons for d in pruned.decisions if d.keep}
    assert set(kept) == {full, first, second}
    assert kept[first] == [f"{BASE_OF} {second}"] and kept[full] == [f"{BASE_OF} {second}"]
    # the WAL archive keeps what the chain's full backup needs: it is a kept backup, restorable on its own too
    cutoff, _ = retention_cutoff([m.physical for m in pruned.remaining])
    assert cutoff is not None and cutoff.name == catalog.get(full).physical.start_wal_segment  # type: ignore[union-attr]

    # a chain goes only as a whole, once none of it is kept
    refs = [BackupRef(m.id, m.completed_at, purpose=m.purpose, parent=m.incremental_of) for m in chain_env.manifests()]
    decisions = {d.id: d.keep for d in plan_retention(refs, Retention(keep_last=1), datetime.now().astimezone())}
    assert decisions == {full: False, first: False, second: False, again: True}


def test_a_full_backup_with_the_reason_when_an_incremental_is_impossible(
        chain_env: Chain, pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    volume = _volume_copy(chain_env, tmp_path, monkeypatch)
    server = chain_env.server

    assert cli.main(["backup", "--full"]) == 0  # the policy from $PGBACKUP_POLICY, as in a Job
    forced = Catalog(FilesystemStorage(volume)).latest().id  # type: ignore[union-attr]
    server.query("ALTER SYSTEM SET summarize_wal = off")
    server.query("SELECT pg_reload_conf()")
    try:
        unsummarized = _backup(chain_env.policy)
    finally:
        server.query("ALTER SYSTEM SET summarize_wal = on")
        server.query("SELECT pg_reload_conf()")
    stop = Catalog(FilesystemStorage(volume)).get(unsummarized).physical.stop_lsn  # type: ignore[union-attr]
    server.query("CHECKPOINT")  # summaries end at a checkpoint's redo point
    deadline = time.monotonic() + 30
    while server.query(f"SELECT summarized_lsn < '{stop}' FROM pg_get_wal_summarizer_state()") == [(True,)]:
        assert time.monotonic() < deadline, server.query("SELECT * FROM pg_get_wal_summarizer_state()")
        time.sleep(0.05)  # past that backup (it would write the summaries again otherwise) ...
    for summary in (server.datadir / "pg_wal" / "summaries").iterdir():  # ... then gone, as wal_summary_keep_time does
        summary.unlink()
    refused = _backup(chain_env.policy)  # no WAL summaries cover the time since the backup above began
    old = backup_policy(pg15, {"volume": {"claimName": "old"}}, method="physical", physical={"fullEvery": 3})
    runner_env(pg15, monkeypatch, tmp_path)
    old_ids = [_backup(old), _backup(old)]

    reasons = {backup_id: Catalog(FilesystemStorage(volume)).get(backup_id).physical.full_reason  # type: ignore[union-attr]
               for backup_id in (forced, unsummarized, refused)}
    assert reasons[forced] == "a full backup was asked for (pgbackup backup --full)"
    assert "summarize_wal is off" in str(reasons[unsummarized])
    assert str(reasons[refused]).startswith("the server refused an incremental backup: "), reasons[refused]
    assert "WAL summaries are required" in str(reasons[refused])
    pg15_catalog = Catalog(FilesystemStorage(tmp_path / "volume"))
    for backup_id in old_ids:
        manifest = pg15_catalog.get(backup_id)
        assert manifest.backup_type == "full"
        assert "incremental backups need PostgreSQL 17" in str(manifest.physical.full_reason)  # type: ignore[union-attr]


def test_an_encrypted_policy_takes_incrementals_with_only_the_public_key(
        chain_env: Chain, tmp_path: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the operator's backup Jobs, the runs hold only the public key: an encrypted policy with fullEvery stores
    its parent manifest unencrypted and without checksums, so the next backup is an incremental; the chain (base.tar
    encrypted) restores with the identity, rows exact. A parent manifest encrypted earlier (before fullEvery was
    set) makes one full backup that says why, unless the run holds the identity (a run by hand)."""
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "identity.txt"
    key_file.write_text(str(identity) + "\n")
    spec = {**chain_env.policy["spec"], "storage": {"volume": {"claimName": "enc"}},
            "encryption": {"recipients": [str(identity.to_public())]}}
    every_full = {**chain_env.policy, "spec": {**spec, "physical": {}}}
    policy = {**chain_env.policy, "spec": spec}
    volume = tmp_path / "volume"
    volume.mkdir()
    monkeypatch.setenv("PGBACKUP_VOLUME_ROOT", str(volume))
    monkeypatch.delenv("PGBACKUP_AGE_IDENTITY_FILE", raising=False)
    server = chain_env.server
    server.query("CREATE TABLE enc (batch int NOT NULL)")
    try:
        server.query("INSERT INTO enc SELECT 0 FROM generate_series(1, 300)")
        before = _backup(every_full)
        first = _backup(policy)
        server.query("INSERT INTO enc SELECT 1 FROM generate_series(1, 40)")
        second = _backup(policy)
        again = _backup(every_full)
        monkeypatch.setenv("PGBACKUP_AGE_IDENTITY_FILE", str(key_file))  # a run by hand with the private key ...
        keyed = _backup(policy)  # ... reads an encrypted parent manifest
    finally:
        server.query("DROP TABLE enc")

    catalog = Catalog(FilesystemStorage(volume))
    old, full, incremental = (catalog.get(backup_id) for backup_id in (before, first, second))
    assert old.backup_manifest_object().encrypted  # type: ignore[union-attr]  # no fullEvery: encrypted as before
    assert "encrypted (taken while fullEvery was unset, or by an older runner)" in str(full.physical.full_reason)  # type: ignore[union-attr]
    assert (incremental.backup_type, incremental.incremental_of) == ("incr", first)
    for manifest in (full, incremental):
        stored = manifest.backup_manifest_object()
        assert stored is not None and not stored.encrypted and stored.key == "backup_manifest.zst"
        assert all(o.encrypted for o in manifest.objects if o is not stored)
        text = zstandard.ZstdDecompressor().decompressobj().decompress((volume / manifest.id / stored.key).read_bytes())
        assert b'"Path": "PG_VERSION"' in text and b'"Checksum"' not in text, text[:300]

    assert catalog.get(keyed).incremental_of == again

    monkeypatch.delenv("PGBACKUP_AGE_IDENTITY_FILE")
    rows = SqlCheck(name="rows", database="postgres",
                    sql="SELECT array_agg(batch || ':' || n ORDER BY batch) = '{0:300,1:40}' "
                        "FROM (SELECT batch, count(*) AS n FROM enc GROUP BY batch) AS b")
    outcome = verify_backup(catalog, second, VerifySpec(enabled=True, checks=[rows]), identity=str(identity),
                            scratch_dir=scratch, environ={"PGUSER": server.user}, write=False)
    assert (outcome.record.phase, outcome.record.reason) == ("Passed", "RestoreVerified"), outcome.record.message
