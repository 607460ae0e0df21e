"""Application volumes in the same backup (BackupPolicy spec.volumes): a directory stands in for the mounted
claim. Real PostgreSQL 15 for the database part, real age encryption, the filesystem storage."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pyrage
import pytest
import yaml

from pgbackup.api import jobenv
from pgbackup.api.policy import AppVolume, Compression
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.cli.main import main
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.common.errors import UsageError
from pgbackup.runner.catalog.manifest import Manifest, ManifestObject
from pgbackup.runner.storage.pipeline import store_stream
from pgbackup.runner.restore.run import run_restore_request
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.backup.volumes import backup_volume
from pgbackup.runner.restore.safetar import UnsafeArchive
from pgbackup.runner.restore.volumes import restore_volume
from tests.fixtures.postgres import PgServer, backup_policy, runner_env

Snapshot = dict[str, tuple[str, int, int, str]]


def snapshot(root: Path) -> Snapshot:
    """Everything a user would compare: type, permission bits, mtime (s), content hash or link target."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                out[rel] = ("link", 0, 0, os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                out[rel] = ("dir", stat.S_IMODE(info.st_mode), int(info.st_mtime), "")
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(info.st_mode), int(info.st_mtime), digest)
    return out


def fs_storage(tmp_path: Path) -> FilesystemStorage:
    (tmp_path / "store").mkdir(exist_ok=True)
    return FilesystemStorage(tmp_path / "store")


def make_uploads(root: Path) -> None:
    (root / "img" / "2026").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "config.yml").write_text("feature: on\n")
    (root / "config.yml").chmod(0o640)
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "img" / "2026" / "cat.png").write_bytes(os.urandom(3 * (1 << 20) + 123))  # several pipe chunks
    (root / "img" / "2026" / "upload.tmp").write_text("half written")
    (root / "current").symlink_to("img/2026")
    os.link(root / "config.yml", root / "config.hardlink.yml")
    os.utime(root / "config.yml", (1_700_000_000, 1_700_000_000))
    os.utime(root / "img" / "2026", (1_600_000_000, 1_600_000_000))


@pytest.fixture
def volume_backup(pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Catalog, Manifest, str, Path]:
    identity = pyrage.x25519.Identity.generate()
    document = backup_policy(pg15, {"volume": {"claimName": "backups"}}, databases=["postgres"],
                             encryption={"recipients": [str(identity.to_public())]},
                             volumes=[{"claimName": "uploads", "exclude": ["*.tmp"]}])
    runner_env(pg15, monkeypatch, tmp_path)
    apps = tmp_path / "apps"
    make_uploads(apps / "uploads")
    monkeypatch.setenv(jobenv.ENV_APP_VOLUMES_ROOT, str(apps))
    code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    catalog = Catalog(FilesystemStorage(tmp_path / "volume"))
    return catalog, catalog.get(str(summary.backup_id)), str(identity), apps / "uploads"


def test_volume_is_an_encrypted_checksummed_object_of_the_backup(volume_backup: tuple[Catalog, Manifest, str, Path],
                                                                 tmp_path: Path) -> None:
    catalog, manifest, _, _ = volume_backup
    (obj,) = manifest.object_by_kind("volume")
    assert obj.volume == "uploads"
    assert obj.key == "volumes/uploads.tar.zst.age" and obj.encrypted
    stored = tmp_path / "volume" / manifest.id / obj.key
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == obj.sha256
    assert {o.kind for o in manifest.objects} == {"database", "globals", "volume"}
    assert catalog.check(manifest.id).ok


def test_volume_restores_into_an_identical_tree(volume_backup: tuple[Catalog, Manifest, str, Path],
                                                tmp_path: Path) -> None:
    catalog, manifest, identity, source = volume_backup
    target = tmp_path / "restored"

    report = restore_volume(catalog, manifest, "uploads", target, identity=identity)

    expected = {k: v for k, v in snapshot(source).items() if not k.endswith(".tmp")}
    assert snapshot(target) == expected
    assert not (target / "img" / "2026" / "upload.tmp").exists()
    assert os.readlink(target / "current") == "img/2026"
    assert (target / "config.hardlink.yml").stat().st_ino == (target / "config.yml").stat().st_ino
    assert report.files == 3 and report.links == 2  # config.yml, run.sh, cat.png; the symlink and the hard link


def test_volume_restore_refuses_a_non_empty_target_unless_overwrite(
        volume_backup: tuple[Catalog, Manifest, str, Path], tmp_path: Path) -> None:
    catalog, manifest, identity, source = volume_backup
    target = tmp_path / "busy"
    target.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("must stay")
    (target / "config.yml").symlink_to(outside)  # a symlink where the backup has a file: never written through

    with pytest.raises(UsageError, match="not empty") as refused:
        restore_volume(catalog, manifest, "uploads", target, identity=identity)
    assert refused.value.reason == "TargetDirectoryNotEmpty"

    restore_volume(catalog, manifest, "uploads", target, overwrite=True, identity=identity)
    assert outside.read_text() == "must stay"
    assert (target / "config.yml").read_text() == "feature: on\n" and not (target / "config.yml").is_symlink()


def test_volume_not_in_the_backup_is_named(volume_backup: tuple[Catalog, Manifest, str, Path], tmp_path: Path) -> None:
    catalog, manifest, identity, _ = volume_backup
    with pytest.raises(UsageError, match="holds no volume 'media' \\(it holds: uploads\\)"):
        restore_volume(catalog, manifest, "media", tmp_path / "x", identity=identity)


def test_cli_restores_a_volume(volume_backup: tuple[Catalog, Manifest, str, Path], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    catalog, manifest, identity, source = volume_backup
    key = tmp_path / "identity.txt"
    key.write_text(identity + "\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"apiVersion": "pgbackup.dev/v1alpha1", "kind": "BackupPolicy",
                                      "metadata": {"name": "orders-db", "namespace": "shop"},
                                      "spec": backup_policy_spec()}))
    target = tmp_path / "cli-restored"

    code = main(["restore", "latest", "--policy", str(policy), "--identity-file", str(key),
                 "--volume", f"uploads={target}"])

    assert code == jobenv.EXIT_OK, capsys.readouterr()
    assert f"volume uploads of backup {manifest.id} restored into {target}" in capsys.readouterr().out
    assert (target / "img" / "2026" / "cat.png").read_bytes() == (source / "img" / "2026" / "cat.png").read_bytes()


def restore_request_env(pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manifest: Manifest,
                        identity: str, **spec: object) -> None:
    policy = backup_policy(pg15, {"volume": {"claimName": "backups"}}, databases=["postgres"],
                           encryption={"recipients": [str(pyrage.x25519.Identity.from_str(identity).to_public())]})
    document = {"name": "rr-vol", "namespace": "shop", "policy": {"name": policy["name"], "spec": policy["spec"]},
                "spec": {"policyRef": {"name": "orders-db"}, "backup": manifest.id,
                         "target": {"host": pg15.host, "port": pg15.port}, **spec}}
    key = tmp_path / "identity.txt"
    key.write_text(identity + "\n")
    monkeypatch.setenv(jobenv.ENV_AGE_IDENTITY_FILE, str(key))
    monkeypatch.setenv(jobenv.ENV_RESTORE, json.dumps(document))


def test_restore_request_brings_volumes_back_into_the_named_claim(
        volume_backup: tuple[Catalog, Manifest, str, Path], pg15: PgServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    catalog, manifest, identity, source = volume_backup
    restore_request_env(pg15, tmp_path, monkeypatch, manifest, identity,
                        target={"host": pg15.host, "port": pg15.port, "database": "vol_rr_restored"},
                        volumes=[{"claimName": "uploads", "targetClaimName": "uploads-restored", "path": "v1"}])

    code, summary = run_restore_request()

    assert code == jobenv.EXIT_OK, summary.error
    restored = tmp_path / "apps" / "uploads-restored" / "v1"
    assert snapshot(restored) == {k: v for k, v in snapshot(source).items() if not k.endswith(".tmp")}
    assert summary.plan is not None
    assert any("restore volume uploads into claim uploads-restored:/v1" in step for step in summary.plan.steps)
    assert any(o.endswith("volumes/uploads.tar.zst.age") for o in summary.plan.objects)


def test_restore_request_for_a_volume_not_in_the_backup_changes_nothing(
        volume_backup: tuple[Catalog, Manifest, str, Path], pg15: PgServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    catalog, manifest, identity, _ = volume_backup
    restore_request_env(pg15, tmp_path, monkeypatch, manifest, identity,
                        target={"host": pg15.host, "port": pg15.port, "database": "vol_rr_never"},
                        volumes=[{"claimName": "media"}])

    code, summary = run_restore_request()

    assert code == jobenv.EXIT_USAGE and summary.reason == "VolumeNotInBackup"
    assert "holds no volume 'media'" in str(summary.error)
    assert not pg15.query("SELECT 1 FROM pg_database WHERE datname = 'vol_rr_never'", "postgres")
    assert not (tmp_path / "apps" / "media").exists()


def backup_policy_spec() -> dict:
    return {"database": {"host": "127.0.0.1", "credentialsSecret": {"name": "db"}}, "schedule": "0 2 * * *",
            "storage": {"volume": {"claimName": "backups"}}, "retention": {"keepLast": 5}}


def test_missing_volume_path_fails_the_backup_clearly(tmp_path: Path) -> None:
    (tmp_path / "uploads").mkdir()
    volume = AppVolume.model_validate({"claimName": "uploads", "paths": ["media"]})
    with pytest.raises(UsageError, match="path 'media' does not exist in the claim") as failed:
        backup_volume(tmp_path / "uploads", volume, fs_storage(tmp_path), "b/volumes/uploads.tar",
                      Compression(), ())
    assert failed.value.reason == "VolumePathMissing"
    assert not list((tmp_path / "store").rglob("*.tar*"))  # the aborted upload left nothing


def test_only_listed_paths_are_copied(tmp_path: Path) -> None:
    make_uploads(tmp_path / "uploads")
    storage = fs_storage(tmp_path)
    volume = AppVolume.model_validate({"claimName": "uploads", "paths": ["img/2026", "run.sh"]})
    done = backup_volume(tmp_path / "uploads", volume, storage, "20261123T020000Z/volumes/uploads.tar",
                         Compression(algorithm="gzip"), ())
    manifest = one_volume_manifest(done.stored, "20261123T020000Z")
    restore_volume(Catalog(storage), manifest, "uploads", tmp_path / "out")
    assert sorted(snapshot(tmp_path / "out")) == ["img", "img/2026", "img/2026/cat.png", "img/2026/upload.tmp",
                                                  "run.sh"]


def test_lost_and_found_is_neither_copied_nor_counted_as_content(tmp_path: Path) -> None:
    (tmp_path / "uploads" / "lost+found").mkdir(parents=True)
    (tmp_path / "uploads" / "lost+found" / "#1234").write_text("fsck leftovers")
    (tmp_path / "uploads" / "a.txt").write_text("a")
    storage = fs_storage(tmp_path)
    done = backup_volume(tmp_path / "uploads", AppVolume(claim_name="uploads"), storage,
                         "20261123T020000Z/volumes/uploads.tar", Compression(), ())
    fresh_ext4 = tmp_path / "claim"
    (fresh_ext4 / "lost+found").mkdir(parents=True)

    restore_volume(Catalog(storage), one_volume_manifest(done.stored, "20261123T020000Z"), "uploads", fresh_ext4)

    assert sorted(snapshot(fresh_ext4)) == ["a.txt", "lost+found"]


# ---------------------------------------------------------------- archives that try to escape


def one_volume_manifest(stored: object, backup_id: str) -> Manifest:
    now = datetime.now(UTC)
    obj = ManifestObject.from_stored(stored, backup_id, kind="volume", volume="uploads")  # type: ignore[arg-type]
    return Manifest(id=backup_id, policy="p", namespace="n", method="logical", started_at=now, completed_at=now,
                    objects=[obj], server_version="15", compression="zstd")


def crafted(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def member(name: str, *, data: bytes = b"pwned", link: str | None = None, hard: bool = False) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type, info.linkname = (tarfile.LNKTYPE if hard else tarfile.SYMTYPE), link
    else:
        info.size = len(data)
    return info, data


@pytest.mark.parametrize("members", [
    [member("../x")],
    [member("ok/../../x")],
    [member("/tmp/x")],
    [member("up", link="../")],
    [member("abs", link="/etc")],
    [member("hard", link="../x", hard=True)],
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out"])
def test_malicious_archive_is_refused(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    storage = fs_storage(tmp_path)
    stored = store_stream(io.BytesIO(crafted([member("fine.txt", data=b"ok"), *members])), storage,
                          "20261123T020000Z/volumes/uploads.tar", compression=Compression())
    manifest = one_volume_manifest(stored, "20261123T020000Z")
    target = tmp_path / "area" / "target"

    with pytest.raises(UnsafeArchive) as refused:
        restore_volume(Catalog(storage), manifest, "uploads", target)

    assert refused.value.reason == "UnsafeArchive"
    assert not (tmp_path / "area" / "x").exists() and not (tmp_path / "x").exists()
    assert not os.path.lexists(target / "up") and not os.path.lexists(target / "abs")


def test_write_through_a_planted_symlink_is_refused(tmp_path: Path) -> None:
    # 'dir' is a symlink inside the target pointing outside; a later member 'dir/x' must not land there
    storage = fs_storage(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    stored = store_stream(io.BytesIO(crafted([member("dir/x")])), storage, "20261123T020000Z/volumes/uploads.tar",
                          compression=Compression())
    target = tmp_path / "target"
    target.mkdir()
    (target / "dir").symlink_to(outside)

    with pytest.raises(UnsafeArchive, match="outside"):
        restore_volume(Catalog(storage), one_volume_manifest(stored, "20261123T020000Z"), "uploads", target,
                       overwrite=True)
    assert not (outside / "x").exists()
