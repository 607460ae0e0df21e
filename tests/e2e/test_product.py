"""The product on a real cluster, with the image under test (PGBACKUP_E2E_IMAGE; default: the chart's).

In a namespace of its own the suite deploys a PostgreSQL and an S3 server (moto), installs the operator with the
Helm chart (watching only that namespace), and then proves what a user relies on:

- a logical policy: backup now (`kubectl pgbackup backup --wait`) -> status with the manifest -> verification
  Passed -> a RestoreRequest into a new database -> the same row counts as the source;
- a physical policy with WAL streaming: base backup, rows, a moment T, more rows, the archive past T -> a
  point-in-time RestoreRequest to T -> exactly the rows written before T.

Timeouts are generous (image pulls on a fresh cluster); every failure says what was waited for and shows the
namespace's objects, Events, `kubectl describe` and logs. The namespace is deleted afterwards
(PGBACKUP_E2E_KEEP=1 keeps it for a look)."""

from __future__ import annotations

import json
import os
import secrets
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.e2e import manifests
from tests.e2e.conftest import kubectl
from tests.e2e.product import Product, helm_binary

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

TABLES = ("orders", "customers")
SEED = """
create table customers (id serial primary key, name text not null);
create table orders (id serial primary key, customer int references customers, item text not null,
                     at timestamptz not null default clock_timestamp());
insert into customers (name) select 'customer ' || g from generate_series(1, 40) g;
insert into orders (customer, item) select 1 + g % 40, 'seed ' || g from generate_series(1, 1000) g;
"""
UTC_NOW = """select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


@pytest.fixture(scope="module")
def product(crds: None) -> Iterator[Product]:
    helm = helm_binary()
    if helm is None:
        pytest.skip("helm not found (run `make tools`): the product test installs the operator with the chart")
    namespace = f"pgbackup-e2e-product-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    deployed = Product(namespace=namespace, release=f"pgbackup-{namespace[-6:]}", helm=helm)
    try:
        deployed.apply(manifests.postgres(namespace, password=secrets.token_urlsafe(24)))
        deployed.apply(manifests.s3(namespace, access_key=f"e2e{secrets.token_hex(8)}",
                                    secret_key=secrets.token_urlsafe(30)))
        deployed.install_operator()
        with deployed.explained():
            for workload in (f"statefulset/{manifests.POSTGRES}", f"deployment/{manifests.S3}"):
                kubectl("rollout", "status", workload, "-n", namespace, "--timeout=400s", timeout=420)
            deployed.wait(lambda: kubectl("exec", "-n", namespace, f"deployment/{manifests.S3}", "--",
                                          *manifests.create_bucket_command()).returncode == 0,
                          120, f"bucket {manifests.BUCKET} on the S3 server")
            deployed.psql(SEED)
        yield deployed
    finally:
        if os.environ.get("PGBACKUP_E2E_KEEP") == "1":
            print(f"\nkept namespace {namespace} (helm release {deployed.release})", file=sys.stderr)
        else:
            deployed.teardown()


@pytest.fixture(autouse=True)
def explain_failures(product: Product) -> Iterator[None]:
    with product.explained():
        yield


def backup_now(product: Product, policy: str) -> dict[str, Any]:
    """`kubectl pgbackup backup POLICY --wait -o json`: the recorded status.lastBackup of a Completed backup."""
    code, out, err = product.plugin("backup", policy, "--wait", "--timeout", "1200", "-o", "json")
    assert code == 0, f"`kubectl pgbackup backup {policy} --wait` exited {code}: {err.strip()}\n{out}"
    last: dict[str, Any] = json.loads(out)
    assert last["phase"] == "Completed" and last["id"], last
    return last


def catalog_record(product: Product, policy: str, backup_id: str) -> dict[str, Any] | None:
    return next((b for b in product.status("backuppolicy", policy).get("backups") or [] if b.get("id") == backup_id),
                None)


def restored_rows(status: dict[str, Any]) -> dict[str, int]:
    """status.result.rowCounts ('<db>.<schema>.<table>': n) as {table: n} for the public tables."""
    counts = (status.get("result") or {}).get("rowCounts") or {}
    return {key.rsplit(".", 1)[1]: value for key, value in counts.items() if key.split(".")[-2] == "public"}


def test_backup_status_verification_restore_and_row_counts(product: Product) -> None:
    policy, target = "shop-logical", "shop_restored"
    product.apply([manifests.backup_policy(product.namespace, policy, verify=True)])
    product.wait_condition("backuppolicy", policy, "Ready", 300)
    source = product.counts(manifests.DATABASE, TABLES)

    last = backup_now(product, policy)
    backup_id = last["id"]

    def recorded() -> dict[str, Any] | None:
        record = catalog_record(product, policy, backup_id)
        return record if record is not None and record.get("manifest") else None

    def verified() -> dict[str, Any] | None:
        verification: dict[str, Any] = (catalog_record(product, policy, backup_id) or {}).get("verification") or {}
        return verification if verification.get("phase") in ("Passed", "Failed") else None

    record = product.wait(recorded, 120, f"backup {backup_id} with its manifest in status.backups")
    assert record["manifest"] == f"s3://{manifests.BUCKET}/e2e/{policy}/{backup_id}/manifest.json", record
    assert record["sizeBytes"] > 0

    verification = product.wait(verified, 1200, f"the verification of backup {backup_id}")
    assert verification["phase"] == "Passed", f"verification of {backup_id} did not pass: {verification}"
    product.wait_condition("backuppolicy", policy, "Verified", 120)

    product.apply([manifests.restore_request(product.namespace, "shop-restore", policy, target, backup=backup_id)])
    done = product.wait_restore("shop-restore", 1200)
    assert done["phase"] == "Succeeded", f"RestoreRequest shop-restore {done['phase']}: {done.get('error')}"
    assert restored_rows(done) == source, done.get("result")
    assert product.counts(target, TABLES) == source
    assert all(check["passed"] for check in done["result"]["checks"]), done["result"]["checks"]
    assert done.get("duration"), "status.duration (the DURATION column) was not written"

    code, out, err = product.plugin("status", "-o", "json")
    row = next(r for r in json.loads(out) if r["name"] == policy)
    assert (row["ready"], row["lastBackup"], row["verified"]) == ("True", backup_id, "yes"), (row, err)


def test_wal_streaming_and_point_in_time_restore(product: Product) -> None:
    policy, target = "shop-pitr", "shop_pitr"
    product.apply([manifests.backup_policy(product.namespace, policy, method="physical", wal=True)])
    product.wait_condition("backuppolicy", policy, "Ready", 300)
    product.wait_condition("backuppolicy", policy, "WALArchiving", 600)
    backup_now(product, policy)

    product.psql("insert into orders (customer, item) select 1, 'before T ' || g from generate_series(1, 150) g")
    moment = product.psql(UTC_NOW)
    expected = product.counts(manifests.DATABASE, TABLES)
    product.psql("insert into orders (customer, item) select 2, 'after T ' || g from generate_series(1, 70) g")
    product.psql("delete from orders where item in ('seed 1', 'seed 2', 'seed 3')")  # back after the restore
    product.psql("select pg_switch_wal()")
    target_time = datetime.fromisoformat(moment.replace("Z", "+00:00"))

    def archived_past_the_moment() -> str | None:
        last_point: str | None = (product.status("backuppolicy", policy).get("recoverability") or {}).get("lastPoint")
        if last_point and datetime.fromisoformat(last_point.replace("Z", "+00:00")) > target_time:
            return last_point
        return None

    product.wait(archived_past_the_moment, 600, f"status.recoverability.lastPoint past {moment}")

    product.apply([manifests.restore_request(product.namespace, "shop-pitr", policy, target, target_time=moment)])
    done = product.wait_restore("shop-pitr", 1200)
    assert done["phase"] == "Succeeded", f"RestoreRequest shop-pitr {done['phase']}: {done.get('error')}"
    assert product.counts(target, TABLES) == expected, f"rows at {moment} were {expected}"
    assert product.psql("select count(*) from orders where item like 'after T %'", target) == "0"
    assert product.psql("select count(*) from orders where item in ('seed 1', 'seed 2', 'seed 3')", target) == "3"
    assert (done.get("plan") or {}).get("walTo"), done.get("plan")
