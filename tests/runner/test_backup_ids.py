"""Backups of one policy started in the same instant (a backup-now Job beside the scheduled Job) get distinct ids
on every backend: each runner claims its id exclusively before it writes anything (pgbackup.runner.catalog.claim)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from pgbackup.api.jobenv import EXIT_OK
from pgbackup.api.summary import JobSummary
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.claim import claim_backup_id
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.catalog.manifest import BACKUP_ID_PATTERN
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.restore.logical import restore_backup
from pgbackup.runner.storage.base import Storage
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.storage.s3 import S3Storage
from tests.fixtures.postgres import PgServer, backup_policy, load_sample, runner_env, table_digest
from tests.fixtures.s3 import MotoServer, RelayProxy, S3Bucket
from tests.runner.claim_support import HookedStorage

BACKENDS = ["volume", "s3", "s3-ignoring-if-none-match"]


class IgnoresConditionalWrites(RelayProxy):
    """An S3 endpoint that drops If-None-Match, like a store without conditional writes that ignores the header."""

    def intercept(self, request: Any) -> bool:
        del request.headers["If-None-Match"]
        return False


class WithoutExclusiveCreate(HookedStorage):
    """A backend that cannot create an object only if absent (the base class's answer)."""

    def create_exclusive(self, key: str, data: bytes) -> bool:
        return Storage.create_exclusive(self, key, data)


def same_instant(runners: int) -> Callable[[str], None]:
    """A listing hook that holds each runner at its first look at the ids of its second until every runner has
    looked: they then all go for the same id, as Jobs started in the same instant do."""
    barrier = threading.Barrier(runners)
    waited: set[int] = set()

    def on_list(prefix: str) -> None:
        if BACKUP_ID_PATTERN.match(prefix) and threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            barrier.wait(timeout=60)

    return on_list


def run_together(runners: list[Callable[[], Any]]) -> list[Any]:
    """Run callables in threads started together, early in a second (so their start times share it)."""
    results: list[Any] = [None] * len(runners)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = runners[index]()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    while time.time() % 1 > 0.3:
        time.sleep(0.01)
    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(runners))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    return results


@pytest.fixture
def storage_for(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], Storage]:
    """A fresh client of the same storage per runner, as separate Jobs have."""

    def make(where: str) -> Storage:
        if where == "volume":
            (tmp_path / "volume" / "orders-db").mkdir(parents=True, exist_ok=True)
            return FilesystemStorage(tmp_path / "volume" / "orders-db")
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        if where == "s3":
            return S3Storage(bucket.spec(), max_attempts=2)
        return S3Storage(bucket.spec(endpoint=ignoring_proxy().endpoint), max_attempts=2)

    proxies: list[IgnoresConditionalWrites] = []

    def ignoring_proxy() -> IgnoresConditionalWrites:
        if not proxies:
            moto: MotoServer = request.getfixturevalue("moto_server")
            proxies.append(IgnoresConditionalWrites(moto.port))
            request.addfinalizer(proxies[0].close)
        return proxies[0]

    return make


@pytest.mark.parametrize("where", [*BACKENDS, "no-exclusive-create"])
def test_runners_claiming_in_one_second_get_distinct_ids(storage_for: Callable[[str], Storage], where: str) -> None:
    now = datetime(2026, 11, 23, 2, 0, 0, 250_000, tzinfo=UTC)
    on_list = same_instant(6)
    backend = "volume" if where == "no-exclusive-create" else where
    wrapper = WithoutExclusiveCreate if where == "no-exclusive-create" else HookedStorage
    storages = [wrapper(storage_for(backend), on_list=on_list) for _ in range(6)]

    claims = run_together([partial(claim_backup_id, s, now) for s in storages])

    ids = {claim.backup_id for claim in claims}
    assert len(ids) == 6 and all(i.startswith("20261123T020000Z") for i in ids)
    # every id holds exactly its owner's claim: losers took theirs back
    listed = sorted(info.key for info in storages[0].inner.list("20261123T020000Z"))
    assert listed == sorted(claim.key for claim in claims)
    if where in ("s3-ignoring-if-none-match", "no-exclusive-create"):
        assert all("/claim-" in claim.key for claim in claims), "the listing protocol was used"
    else:
        assert all(claim.key.endswith("/claim.json") for claim in claims), "the exclusive create was used"
        assert ids == {"20261123T020000Z", *(f"20261123T020000Z-{n}" for n in range(1, 6))}


@pytest.mark.parametrize("where", BACKENDS)
def test_two_backups_started_in_the_same_instant_get_two_good_ids(pg15: PgServer, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, where: str,
                                                                  storage_for: Callable[[str], Storage]) -> None:
    server, db = pg15, load_sample(pg15)
    runner_env(server, monkeypatch, tmp_path)
    first = storage_for(where)
    storage_spec = {"s3": first.spec.to_wire()} if isinstance(first, S3Storage) else {"volume": {"claimName": "backups"}}
    policy = policy_from_document(backup_policy(server, storage_spec, databases=[db]), "test")
    on_list = same_instant(2)
    storages = [HookedStorage(first, on_list=on_list), HookedStorage(storage_for(where), on_list=on_list)]

    results: list[tuple[int, JobSummary]] = run_together(
        [partial(backup_command, policy, storage=s) for s in storages])

    assert [code for code, _ in results] == [EXIT_OK, EXIT_OK], [summary.error for _, summary in results]
    ids = sorted(str(summary.backup_id) for _, summary in results)
    assert len(set(ids)) == 2, f"both runs reported {ids[0]}"
    catalog = Catalog(storage_for(where))
    assert sorted(catalog.ids()) == ids
    params = ConnParams(host=server.host, port=server.port, user=server.user, password=server.password)
    for n, backup_id in enumerate(ids):
        assert catalog.check(backup_id).ok, catalog.check(backup_id).summary()
        target = f"same_instant_{where.replace('-', '_')}_{n}"
        restore_backup(catalog, backup_id, params, target)
        try:
            assert table_digest(server, target) == table_digest(server, db)
        finally:
            server.query(f'DROP DATABASE "{target}"')
