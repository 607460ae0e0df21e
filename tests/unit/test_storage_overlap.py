"""Which policies share a storage location (pure): default prefixes, normalisation, copies, claims per namespace."""

from __future__ import annotations

from typing import Any

from pgbackup.api import BackupPolicySpec
from pgbackup.builders.storage_overlap import StorageUse, overlap_check, storage_uses


def spec(storage: dict[str, Any], copies: list[dict[str, Any]] | None = None) -> BackupPolicySpec:
    return BackupPolicySpec.model_validate({
        "database": {"host": "db", "credentialsSecret": {"name": "db"}}, "schedule": "0 2 * * *",
        "storage": storage, "retention": {"keepLast": 3}, "copies": copies or []})


def uses(namespace: str, name: str, created: str, storage: dict[str, Any],
         copies: list[dict[str, Any]] | None = None) -> list[StorageUse]:
    return storage_uses(namespace, name, created, spec(storage, copies))


S3 = {"bucket": "backups", "endpoint": "http://minio:9000"}


def test_an_unset_prefix_is_the_policy_s_own_location() -> None:
    a = uses("shop", "a", "2026-01-01T00:00:00Z", {"s3": S3})
    b = uses("shop", "b", "2026-01-02T00:00:00Z", {"s3": S3})
    assert a[0].location == "s3://minio:9000/backups/shop/a"
    assert overlap_check(b, a + b).ok


def test_the_later_policy_fails_and_names_the_earlier_one() -> None:
    a = uses("shop", "a", "2026-01-01T00:00:00Z", {"s3": {**S3, "prefix": "team"}})
    b = uses("billing", "b", "2026-01-02T00:00:00Z", {"s3": {**S3, "endpoint": "http://MINIO:9000/", "prefix": "team"}})
    check = overlap_check(b, a + b)
    assert (check.ok, check.reason) == (False, "StorageOverlap")
    assert "BackupPolicy shop/a" in check.message and "s3://minio:9000/backups/team" in check.message
    assert overlap_check(a, a + b).ok  # the earlier one stays Ready


def test_a_copy_into_another_policy_s_location_counts() -> None:
    a = uses("shop", "a", "2026-01-01T00:00:00Z", {"s3": {**S3, "prefix": "shop/b-dr"}})
    copy = {"name": "dr", "s3": {**S3, "prefix": "shop/b-dr"}, "retention": {"keepLast": 1}}
    b = uses("shop", "b", "2026-01-02T00:00:00Z", {"s3": S3}, [copy])
    check = overlap_check(b, a + b)
    assert not check.ok and "spec.copies[dr]" in check.message


def test_volume_claims_are_per_namespace_and_paths_are_normalised() -> None:
    a = uses("shop", "a", "2026-01-01T00:00:00Z", {"volume": {"claimName": "backups", "path": "x//y/"}})
    b = uses("shop", "b", "2026-01-02T00:00:00Z", {"volume": {"claimName": "backups", "path": "x/y"}})
    c = uses("billing", "c", "2026-01-03T00:00:00Z", {"volume": {"claimName": "backups", "path": "x/y"}})
    assert not overlap_check(b, a + b + c).ok
    assert overlap_check(c, a + b + c).ok
