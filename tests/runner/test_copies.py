"""Copies of backups (BackupPolicy.spec.copies) against real PostgreSQL 15, a real moto S3 server and volumes.

What a user would notice: every copy lists the backup with the very same bytes; with the primary bucket gone the
copy still restores; a broken copy never fails the backup and says why; a copy that missed backups catches up;
a copy's retention prunes the copy only; a damaged primary object is never copied.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from pgbackup.api import jobenv
from pgbackup.api.summary import JobSummary
from pgbackup.runner.cli import main as cli
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.backup.copies import copy_backup, sync_copies, sync_copy
from pgbackup.runner.storage.factory import find_copy, open_copy_storage
from pgbackup.runner.common.log import redact
from pgbackup.runner.catalog.manifest import Manifest
from pgbackup.runner.postgres.facts import count_rows
from pgbackup.runner.restore.run import run_restore_request
from pgbackup.runner.storage.base import Storage
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.storage.s3 import S3Storage
from tests.fixtures.postgres import PgServer, backup_policy, load_sample, runner_env
from tests.fixtures.s3 import MotoServer, S3Bucket, make_bucket

OFFSITE = "offsite"
NEARBY = "nearby"
COPY_KEY_ID = "copy-key-id"
COPY_SECRET = "copy-secret-never-logged"


def copies_policy(server: PgServer, primary: S3Bucket, dbname: str, copies: list[dict[str, Any]],
                  **spec: Any) -> dict[str, Any]:
    return backup_policy(server, {"s3": primary.wire()}, databases=[dbname], logical={"globals": False},
                         copies=copies, **spec)


def s3_copy(bucket: S3Bucket, name: str = OFFSITE, **retention: int) -> dict[str, Any]:
    return {"name": name, "s3": {**bucket.wire(prefix="offsite/orders-db"), "credentialsSecret": {"name": "offsite-s3"}},
            "retention": retention or {"keepLast": 5}}


def volume_copy(name: str = NEARBY, **retention: int) -> dict[str, Any]:
    return {"name": name, "volume": {"claimName": "nearby-backups", "path": "orders"},
            "retention": retention or {"keepLast": 5}}


def copy_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """What the backup Job gives the runner for the copies: the S3 copy's own keys, the volume copy's mount."""
    monkeypatch.setenv(jobenv.copy_access_key_env(OFFSITE), COPY_KEY_ID)
    monkeypatch.setenv(jobenv.copy_secret_key_env(OFFSITE), COPY_SECRET)
    root = tmp_path / "nearby-volume"
    root.mkdir(exist_ok=True)
    monkeypatch.setenv(jobenv.copy_volume_root_env(NEARBY), str(root))
    return root


def backup(document: dict[str, Any]) -> JobSummary:
    code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    assert summary.phase == "Completed"
    return summary


def stored_sha256(storage: Storage, manifest: Manifest) -> dict[str, str]:
    """SHA-256 of the stored bytes of every object of a backup, and of its manifest."""
    keys = [Catalog.object_key(manifest.id, o.key) for o in manifest.objects] + [Catalog.manifest_key(manifest.id)]
    return {key: hashlib.sha256(storage.get_bytes(key)).hexdigest() for key in keys}


def copies_by_name(summary: JobSummary) -> dict[str, Any]:
    return {c.name: c for c in summary.copies or []}


@pytest.fixture
def shop(pg15: PgServer) -> tuple[PgServer, str]:
    return pg15, load_sample(pg15)


@pytest.fixture
def offsite(moto_server: MotoServer, s3_bucket: S3Bucket) -> S3Bucket:  # s3_bucket sets the test credentials
    return make_bucket(moto_server.endpoint)


def test_backup_lands_in_every_copy_with_identical_bytes(shop: tuple[PgServer, str], s3_bucket: S3Bucket,
                                                         offsite: S3Bucket, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    server, db = shop
    document = copies_policy(server, s3_bucket, db, [s3_copy(offsite), volume_copy()])
    summary_file = runner_env(server, monkeypatch, tmp_path, policy=document)
    nearby_root = copy_env(monkeypatch, tmp_path)

    summary = backup(document)

    primary = S3Storage(s3_bucket.spec())
    manifest = Catalog(primary).get(str(summary.backup_id))
    expected = stored_sha256(primary, manifest)
    assert {o.key: o.sha256 for o in manifest.objects} == {
        key.split("/", 1)[1]: digest for key, digest in expected.items() if not key.endswith("manifest.json")}
    offsite_storage = S3Storage(offsite.spec(prefix="offsite/orders-db"))
    nearby_storage = FilesystemStorage(nearby_root / "orders")
    for storage in (offsite_storage, nearby_storage):
        assert Catalog(storage).ids() == [manifest.id]
        assert stored_sha256(storage, manifest) == expected
        assert storage.get_bytes(Catalog.manifest_digest_key(manifest.id)) == primary.get_bytes(
            Catalog.manifest_digest_key(manifest.id))  # the manifest stays protected in the copy
        assert Catalog(storage).check(manifest.id).ok
    # the operator reads the copies' state from the termination message
    written = JobSummary.from_termination_message(summary_file.read_text())
    assert written is not None and written.copies is not None
    for state in written.copies:
        assert state.error is None and state.lag_backups == 0 and state.last_copied_backup == manifest.id
    # `pgbackup list --copy NAME` shows the copy's catalog
    backup_output = capsys.readouterr()
    assert cli.main(["list", "--copy", OFFSITE, "--json"]) == 0
    assert [m["id"] for m in json.loads(capsys.readouterr().out)] == [manifest.id]
    assert cli.main(["check", manifest.id, "--copy", NEARBY]) == 0
    assert cli.main(["list", "--copy", "elsewhere"]) == jobenv.EXIT_USAGE
    assert "no copy named 'elsewhere'" in capsys.readouterr().err
    # the copy's keys never reach the log or the summary
    assert COPY_SECRET not in backup_output.out + backup_output.err + summary_file.read_text()


def test_copy_restores_after_the_primary_bucket_is_deleted(shop: tuple[PgServer, str], s3_bucket: S3Bucket,
                                                           offsite: S3Bucket, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    server, db = shop
    document = copies_policy(server, s3_bucket, db, [s3_copy(offsite), volume_copy()])
    runner_env(server, monkeypatch, tmp_path, policy=document)
    copy_env(monkeypatch, tmp_path)
    summary = backup(document)

    for key in s3_bucket.keys():
        s3_bucket.client.delete_object(Bucket=s3_bucket.bucket, Key=key)
    s3_bucket.client.delete_bucket(Bucket=s3_bucket.bucket)

    # a RestoreRequest with spec.fromCopy
    request = {"name": "rr-copy", "namespace": "shop",
               "spec": {"policyRef": {"name": "orders-db"}, "backup": "latest", "fromCopy": OFFSITE,
                        "target": {"host": server.host, "port": server.port, "database": "shop_from_offsite"}},
               "policy": {"name": document["name"], "spec": document["spec"]}}
    server.query('DROP DATABASE IF EXISTS "shop_from_offsite"')
    monkeypatch.setenv(jobenv.ENV_RESTORE, json.dumps(request))
    code, restored = run_restore_request()
    assert code == 0, restored.error
    assert restored.backup_id == summary.backup_id
    assert rows(server, "shop_from_offsite") == rows(server, db)

    # `pgbackup restore --from-copy` from the volume copy
    server.query('DROP DATABASE IF EXISTS "shop_from_nearby"')
    assert cli.main(["restore", "latest", "--from-copy", NEARBY, "--target-database", "shop_from_nearby"]) == 0, \
        capsys.readouterr().err
    assert rows(server, "shop_from_nearby") == rows(server, db)

    # an unknown copy name is a usage error naming the copies there are
    monkeypatch.setenv(jobenv.ENV_RESTORE, json.dumps({**request, "spec": {**request["spec"], "fromCopy": "nowhere"}}))
    code, failed = run_restore_request()
    assert code == jobenv.EXIT_USAGE and failed.phase == "Failed"
    assert "no copy named 'nowhere'" in str(failed.error) and "offsite, nearby" in str(failed.error)


def rows(server: PgServer, dbname: str) -> dict[str, int]:
    with server.connect(dbname) as conn:
        return count_rows(conn)


def test_missing_copy_bucket_never_fails_the_backup(shop: tuple[PgServer, str], s3_bucket: S3Bucket,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = shop
    gone = {"name": OFFSITE, "s3": {**s3_bucket.wire(), "bucket": "no-such-copy-bucket"},
            "retention": {"keepLast": 3}}
    document = copies_policy(server, s3_bucket, db, [gone, volume_copy()])
    summary_file = runner_env(server, monkeypatch, tmp_path, policy=document)
    copy_env(monkeypatch, tmp_path)

    summary = backup(document)

    states = copies_by_name(summary)
    assert "no-such-copy-bucket" in str(states[OFFSITE].error)
    assert states[OFFSITE].last_copied_backup is None
    assert states[NEARBY].error is None and states[NEARBY].last_copied_backup == summary.backup_id
    written = json.loads(summary_file.read_text())
    assert written["phase"] == "Completed" and "no-such-copy-bucket" in written["copies"][0]["error"]
    assert Catalog(S3Storage(s3_bucket.spec())).ids() == [summary.backup_id]


def test_copy_catches_up_on_backups_it_missed(shop: tuple[PgServer, str], s3_bucket: S3Bucket, offsite: S3Bucket,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = shop
    runner_env(server, monkeypatch, tmp_path)
    copy_env(monkeypatch, tmp_path)
    older = backup(copies_policy(server, s3_bucket, db, []))  # taken before the copies were configured
    middle = backup(copies_policy(server, s3_bucket, db, []))

    document = copies_policy(server, s3_bucket, db, [s3_copy(offsite), volume_copy()])
    policy = policy_from_document(document, "test")
    primary = S3Storage(s3_bucket.spec())
    nearby = open_copy_storage(find_copy(policy, NEARBY))  # the volume root from the Job's env
    bounded = sync_copy(primary, find_copy(policy, NEARBY), nearby, max_catch_up=1)  # newest first, one per run
    assert Catalog(nearby).ids() == [middle.backup_id] and bounded.lag_backups == 1

    newest = backup(document)

    expected = [newest.backup_id, middle.backup_id, older.backup_id]
    assert Catalog(nearby).ids() == expected
    assert Catalog(S3Storage(offsite.spec(prefix="offsite/orders-db"))).ids() == expected
    assert all(state.lag_backups == 0 for state in newest.copies or [])


def test_copy_retention_prunes_the_copy_only(shop: tuple[PgServer, str], s3_bucket: S3Bucket, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = shop
    document = copies_policy(server, s3_bucket, db, [volume_copy(keepLast=1)], retention={"keepLast": 5})
    runner_env(server, monkeypatch, tmp_path)
    nearby_root = copy_env(monkeypatch, tmp_path)

    first = backup(document)
    second = backup(document)

    assert Catalog(FilesystemStorage(nearby_root / "orders")).ids() == [second.backup_id]
    assert Catalog(S3Storage(s3_bucket.spec())).ids() == [second.backup_id, first.backup_id]
    assert copies_by_name(second)[NEARBY].lag_backups == 0  # the older one is not wanted by the copy's retention


def test_damaged_primary_object_is_not_copied(shop: tuple[PgServer, str], s3_bucket: S3Bucket, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = shop
    runner_env(server, monkeypatch, tmp_path)
    summary = backup(copies_policy(server, s3_bucket, db, []))
    primary = S3Storage(s3_bucket.spec())
    manifest = Catalog(primary).get(str(summary.backup_id))
    key = Catalog.object_key(manifest.id, manifest.objects[0].key)
    data = bytearray(primary.get_bytes(key))
    data[len(data) // 2] ^= 0xFF
    primary.put_bytes(key, bytes(data))
    target = FilesystemStorage(tmp_path / "copy")
    (tmp_path / "copy").mkdir()

    with pytest.raises(Exception, match="does not match its manifest"):
        copy_backup(primary, target, manifest)

    assert Catalog(target).ids() == []
    assert list(target.list()) == []  # the damaged object was aborted, not left behind



def test_s3_copy_uses_its_own_credentials(shop: tuple[PgServer, str], s3_bucket: S3Bucket, offsite: S3Bucket,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = shop
    policy = policy_from_document(copies_policy(server, s3_bucket, db, [s3_copy(offsite)]), "test")
    runner_env(server, monkeypatch, tmp_path)
    (tmp_path / "primary").mkdir()
    primary = FilesystemStorage(tmp_path / "primary")

    # the Secret is named but its env is missing (e.g. `pgbackup` run by hand): a clear error, no fallback to AWS_*
    (state,) = sync_copies(policy, primary)
    assert jobenv.copy_access_key_env(OFFSITE) in str(state.error)

    copy_env(monkeypatch, tmp_path)
    storage = open_copy_storage(find_copy(policy, OFFSITE))
    assert isinstance(storage, S3Storage)
    credentials = storage.client._request_signer._credentials  # the session boto3 signs this copy's requests with
    assert (credentials.access_key, credentials.secret_key) == (COPY_KEY_ID, COPY_SECRET)
    assert COPY_SECRET not in repr(storage.__dict__)
    assert COPY_SECRET not in redact(f"failed with {COPY_SECRET}")  # error texts are scrubbed of the copy's key
