"""`kubectl pgbackup` against the kmock API emulator, through a kubeconfig like a user's.

Most tests put policies with status into the emulator directly and play the operator's part (create the Job,
write the status) while the plugin waits in a thread; one drives a backup through the real operator."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgbackup.api import JobSummary
from pgbackup.builders.names import backup_now_job_name, cronjob_name
from pgbackup.plugin.cli import run
from tests.handlers.conftest import NAMESPACE, Cluster, Operator, eventually, policy_spec

pytestmark = pytest.mark.timeout(60)

GROUP, VERSION = "pgbackup.dev", "v1alpha1"
BACKUP_ID = "20261123T020000Z"
FAST = ["--poll-interval", "0.05"]


class Plugin:
    """Runs `kubectl pgbackup ARGS` in a thread (the emulator serves from the test's event loop)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def _run(self, args: list[str]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = run(["--kubeconfig", str(self.kubeconfig), *FAST, *args], out, err)
        return code, out.getvalue(), err.getvalue()

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        return await asyncio.to_thread(self._run, list(args))

    def start(self, *args: str) -> asyncio.Task[tuple[int, str, str]]:
        return asyncio.create_task(asyncio.to_thread(self._run, list(args)))


@pytest.fixture()
def plugin(emulator: Any, tmp_path: Path) -> Plugin:
    """A kubeconfig whose current context points at the emulator, namespace 'shop'."""
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "test",
              "clusters": [{"name": "kmock", "cluster": {"server": str(emulator.url).rstrip("/")}}],
              "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
              "contexts": [{"name": "test", "context": {"cluster": "kmock", "user": "tester", "namespace": NAMESPACE}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return Plugin(path)


def condition(type: str, status: str, message: str = "") -> dict[str, Any]:
    return {"type": type, "status": status, "reason": type if status == "True" else f"Not{type}", "message": message}


def healthy_status() -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "cronJobName": "orders-backup",
        "conditions": [condition("Ready", "True", "backups run"), condition("ObjectivesMet", "True")],
        "lastBackup": {"id": BACKUP_ID, "phase": "Completed", "completedAt": "2026-11-23T02:05:00Z",
                       "sizeBytes": 3 * 1024 * 1024, "size": "3.0 MiB", "verified": True},
        "backups": [{"id": BACKUP_ID, "method": "logical", "phase": "Completed", "completedAt": "2026-11-23T02:05:00Z",
                     "sizeBytes": 3 * 1024 * 1024, "verification": {"phase": "Passed"}},
                    {"id": "20261122T020000Z", "method": "logical", "phase": "Completed",
                     "completedAt": "2026-11-22T02:05:00Z", "sizeBytes": 1024}],
    }


def set_status(cluster: Cluster, name: str, status: dict[str, Any], namespace: str = NAMESPACE) -> None:
    cluster.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "backuppolicies", name,
                                                         {"status": status},
                                                         _content_type="application/merge-patch+json")


async def policy_with_status(cluster: Cluster, name: str, status: dict[str, Any]) -> None:
    await asyncio.to_thread(cluster.create_policy, name, policy_spec())
    await asyncio.to_thread(set_status, cluster, name, status)


# ------------------------------------------------------------------ status and list


async def test_status_shows_each_policy_and_exits_0_when_all_are_ready(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    code, out, err = await plugin("status")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split()[:3] == ["NAME", "READY", "LAST"]
    assert row.split()[:3] == ["orders", "True", BACKUP_ID]
    assert "3.0 MiB" in row


async def test_status_exits_1_and_says_why_when_a_policy_is_not_ready(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    broken = {**healthy_status(), "conditions": [condition("Ready", "False", "the last backup failed: disk full")],
              "lastBackup": {"phase": "Failed", "error": "disk full"}}
    await policy_with_status(cluster, "billing", broken)
    code, out, _ = await plugin("status")
    assert code == 1
    assert "billing: not Ready: the last backup failed: disk full" in out
    assert "orders:" not in out.split("Needs attention")[1]


async def test_status_exits_1_when_objectives_are_missed(cluster: Cluster, plugin: Plugin) -> None:
    missed = {**healthy_status(), "conditions": [condition("Ready", "True"),
                                                 condition("ObjectivesMet", "False", "RPO 30h exceeds 24h")]}
    await policy_with_status(cluster, "orders", missed)
    code, out, _ = await plugin("status", "-o", "json")
    assert code == 1
    [row] = json.loads(out)
    assert row["objectivesMet"] is False and row["problems"] == ["orders: RPO 30h exceeds 24h"]


async def test_status_of_another_and_of_all_namespaces(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BackupPolicy",
            "metadata": {"name": "ledger", "namespace": "finance", "generation": 1}, "spec": policy_spec()}
    await asyncio.to_thread(cluster.custom.create_namespaced_custom_object, GROUP, VERSION, "finance",
                            "backuppolicies", body)
    await asyncio.to_thread(set_status, cluster, "ledger", healthy_status(), "finance")

    code, out, err = await plugin("-n", "finance", "status", "-o", "json")
    assert code == 0, err
    assert [row["name"] for row in json.loads(out)] == ["ledger"]
    code, out, err = await plugin("status", "-A")
    assert code == 0, err
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["finance", "ledger"], ["shop", "orders"]]


async def test_status_without_policies_says_so_on_stderr(emulator: Any, plugin: Plugin) -> None:
    code, out, err = await plugin("status")
    assert (code, out) == (0, "")
    assert "No BackupPolicies found in namespace shop" in err


async def test_list_prints_the_catalog(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    code, out, err = await plugin("list", "orders")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "METHOD", "TYPE", "PHASE", "COMPLETED", "SIZE", "VERIFICATION"]
    assert [line.split()[0] for line in lines[1:]] == [BACKUP_ID, "20261122T020000Z"]
    assert lines[1].split()[-1] == "Passed"
    code, out, _ = await plugin("list", "orders", "-o", "json")
    assert [b["id"] for b in json.loads(out)] == [BACKUP_ID, "20261122T020000Z"]


async def test_list_shows_which_backups_are_incremental_and_what_they_build_on(cluster: Cluster,
                                                                              plugin: Plugin) -> None:
    status = healthy_status()
    status["backups"] = [
        {"id": "20261123T020000Z", "method": "physical", "backupType": "incr", "incrementalOf": "20261122T020000Z",
         "phase": "Completed", "completedAt": "2026-11-23T02:01:00Z", "sizeBytes": 4 * 1024 * 1024},
        {"id": "20261122T020000Z", "method": "physical", "backupType": "full", "phase": "Completed",
         "completedAt": "2026-11-22T02:05:00Z", "sizeBytes": 190 * 1024 * 1024}]
    await policy_with_status(cluster, "orders", status)

    code, out, err = await plugin("list", "orders")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [row[:3] for row in rows] == [["20261123T020000Z", "physical", "incr"],
                                         ["20261122T020000Z", "physical", "full"]]
    code, out, err = await plugin("list", "orders", "-o", "wide")
    assert code == 0, err
    header, incremental, full = out.splitlines()
    column = header.index("INCREMENTAL OF")
    assert incremental[column:].split()[0] == "20261122T020000Z"
    assert full[column:].split()[0] == "-"


async def test_unknown_policy_is_an_error_that_says_what_to_do(emulator: Any, plugin: Plugin) -> None:
    code, out, err = await plugin("list", "nope")
    assert (code, out) == (3, "")
    assert "BackupPolicy 'nope' not found in namespace 'shop'" in err and "kubectl get backuppolicies" in err


# ------------------------------------------------------------------ backup


def backup_now_value(cluster: Cluster, name: str) -> str | None:
    return (cluster.policy(name)["metadata"].get("annotations") or {}).get("pgbackup.dev/backup-now")


def create_finished_job(cluster: Cluster, policy: str, value: str, outcome: str) -> str:
    """The on-demand Job the operator would create for `value`, already finished (Complete or Failed)."""
    name = backup_now_job_name(cronjob_name(policy), value)
    cluster.batch.create_namespaced_job(NAMESPACE, {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"pgbackup.dev/policy": policy},
                     "annotations": {"pgbackup.dev/backup-now": value}},
        "spec": {"template": {"spec": {"containers": [{"name": "backup", "image": "x"}], "restartPolicy": "Never"}}},
        "status": {"conditions": [{"type": outcome, "status": "True"}]},
    }, _preload_content=False)
    return name


async def test_backup_sets_only_the_annotation_and_returns_0_when_the_backup_is_recorded(
        cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    before = await asyncio.to_thread(cluster.policy, "orders")
    waiting = plugin.start("backup", "orders", "--wait", "--timeout", "30")

    value = await eventually(lambda: backup_now_value(cluster, "orders"), what="the backup-now annotation")
    after = await asyncio.to_thread(cluster.policy, "orders")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]

    job = await asyncio.to_thread(create_finished_job, cluster, "orders", value, "Complete")
    await asyncio.sleep(0.2)
    assert not waiting.done(), "the plugin must wait until the operator recorded the result"
    await asyncio.to_thread(set_status, cluster, "orders", {"lastBackup": {
        "id": "20261123T161000Z", "phase": "Completed", "size": "4.0 MiB", "jobName": job}})
    code, out, err = await waiting
    assert code == 0, err
    assert out.splitlines()[0] == "Backup 20261123T161000Z: Completed"
    assert "Size: 4.0 MiB" in out
    assert f"Job {job} started" in err


async def test_backup_returns_1_when_the_backup_failed(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    waiting = plugin.start("backup", "orders", "--wait", "--timeout", "30")
    value = await eventually(lambda: backup_now_value(cluster, "orders"), what="the backup-now annotation")
    job = await asyncio.to_thread(create_finished_job, cluster, "orders", value, "Failed")
    await asyncio.to_thread(set_status, cluster, "orders", {"lastBackup": {
        "phase": "Failed", "jobName": job, "error": "could not connect to db.shop.svc:5432"}})
    code, out, _ = await waiting
    assert code == 1
    assert "Error: could not connect to db.shop.svc:5432" in out


async def test_backup_times_out_with_2_when_no_job_appears(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    code, _, err = await plugin("backup", "orders", "--wait", "--timeout", "0.3")
    assert code == 2
    assert "no backup Job appeared" in err


async def test_backup_without_wait_only_requests_it(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    code, _, err = await plugin("backup", "orders")
    assert code == 0, err
    assert await asyncio.to_thread(backup_now_value, cluster, "orders")


async def test_backup_through_the_real_operator(cluster: Cluster, secrets: None, operator: Operator,
                                                plugin: Plugin) -> None:
    """The annotation the plugin sets is the one the operator acts on, and the plugin ends when the operator
    has recorded the Job's result."""
    summary = JobSummary(kind="backup", phase="Completed", backup_id="20261123T161000Z", method="logical",
                         size_bytes=5 * 1024 * 1024, duration_seconds=3.0)
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", policy_spec())
        await eventually(lambda: cluster.cronjob("orders-backup"), what="the CronJob")
        waiting = plugin.start("backup", "orders", "--wait", "--timeout", "30")
        [job] = await eventually(lambda: cluster.jobs(), what="the on-demand Job")
        name = job["metadata"]["name"]
        await asyncio.to_thread(cluster.core.create_namespaced_pod, NAMESPACE, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-abcde", "namespace": NAMESPACE,
                         "labels": {**job["spec"]["template"]["metadata"]["labels"], "job-name": name}},
            "spec": job["spec"]["template"]["spec"],
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "backup", "state": {
                "terminated": {"exitCode": 0, "message": summary.to_termination_message()}}}]},
        }, _preload_content=False)
        await asyncio.to_thread(cluster.batch.patch_namespaced_job_status, name, NAMESPACE,
                                {"status": {"conditions": [{"type": "Complete", "status": "True"}]}},
                                _content_type="application/merge-patch+json")
        code, out, err = await waiting
    assert code == 0, err
    assert out.splitlines()[0] == "Backup 20261123T161000Z: Completed"
    assert "5.0 MiB" in out


# ------------------------------------------------------------------ restore


def restores(cluster: Cluster) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.custom.list_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "restorerequests")["items"]
    return items


def set_restore_status(cluster: Cluster, name: str, status: dict[str, Any]) -> None:
    cluster.custom.patch_namespaced_custom_object_status(GROUP, VERSION, NAMESPACE, "restorerequests", name,
                                                         {"status": status},
                                                         _content_type="application/merge-patch+json")


async def test_restore_creates_the_request_and_follows_it_to_succeeded(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    waiting = plugin.start("restore", "orders", "--backup", BACKUP_ID, "--target-database", "orders_copy",
                           "--wait", "--timeout", "30")
    [request] = await eventually(lambda: restores(cluster), what="the RestoreRequest")
    name = request["metadata"]["name"]
    assert name.startswith("orders-restore-")
    assert request["spec"] == {"policyRef": {"name": "orders"}, "backup": BACKUP_ID,
                               "target": {"database": "orders_copy"}}

    plan = {"backup": BACKUP_ID, "target": "db.shop.svc:5432/orders_copy", "steps": ["create database", "pg_restore"]}
    await asyncio.to_thread(set_restore_status, cluster, name, {"phase": "Planning"})
    await asyncio.to_thread(set_restore_status, cluster, name, {"phase": "Running", "plan": plan})
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await asyncio.to_thread(set_restore_status, cluster, name, {"phase": "Succeeded", "result": {
        "restoreSeconds": 12, "rowCounts": {"public.orders": 3},
        "checks": [{"name": "has-orders", "passed": True}]}})
    code, out, err = await waiting
    assert code == 0, err
    assert f"{name}: Running" in err
    assert f"  Backup: {BACKUP_ID}" in out and "    2. pg_restore" in out
    assert f"RestoreRequest {name}: Succeeded" in out
    assert "public.orders  3" in out and "PASS  has-orders" in out


async def test_restore_returns_1_when_it_failed(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    waiting = plugin.start("restore", "orders", "--to-time", "2026-11-23T10:15:00Z", "--dry-run", "--wait",
                           "--timeout", "30")
    [request] = await eventually(lambda: restores(cluster), what="the RestoreRequest")
    assert request["spec"] == {"policyRef": {"name": "orders"}, "backup": "latest",
                               "pointInTime": {"targetTime": "2026-11-23T10:15:00Z"}, "dryRun": True}
    await asyncio.to_thread(set_restore_status, cluster, request["metadata"]["name"],
                            {"phase": "Failed", "error": "no WAL archived after 2026-11-23T02:05:00Z"})
    code, out, _ = await waiting
    assert code == 1
    assert "Error: no WAL archived after 2026-11-23T02:05:00Z" in out


async def test_invalid_restore_arguments_create_nothing(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    code, _, err = await plugin("restore", "orders", "--backup", "yesterday")
    assert code == 3
    assert "invalid restore: backup:" in err
    assert await asyncio.to_thread(restores, cluster) == []


# ------------------------------------------------------------------ kubectl's global flags


async def other_namespace_policy(cluster: Cluster) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BackupPolicy",
            "metadata": {"name": "ledger", "namespace": "finance", "generation": 1}, "spec": policy_spec()}
    await asyncio.to_thread(cluster.custom.create_namespaced_custom_object, GROUP, VERSION, "finance",
                            "backuppolicies", body)
    await asyncio.to_thread(set_status, cluster, "ledger", healthy_status(), "finance")


@pytest.mark.parametrize("args", [
    ["status", "-n", "finance", "-o", "json"],
    ["-n", "finance", "status", "-o", "json"],
    ["status", "--namespace=finance", "-o", "json"],
    ["-o", "json", "status", "--namespace", "finance"],
    ["status", "-o=json", "-nfinance"],
])
async def test_namespace_and_output_flags_are_taken_anywhere_on_the_line(
        cluster: Cluster, plugin: Plugin, args: list[str]) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    await other_namespace_policy(cluster)
    code, out, err = await plugin(*args)
    assert code == 0, err
    assert [row["name"] for row in json.loads(out)] == ["ledger"]


async def test_flags_after_the_subcommand_for_list_backup_and_restore(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    await other_namespace_policy(cluster)
    code, out, err = await plugin("list", "ledger", "-n", "finance", "-o", "json")
    assert code == 0, err
    assert [b["id"] for b in json.loads(out)][0] == BACKUP_ID
    code, _, err = await plugin("backup", "ledger", "--namespace", "finance")
    assert code == 0, err
    assert "finance/ledger" in err
    code, out, err = await plugin("restore", "ledger", "-n", "finance", "-o", "name")
    assert code == 0, err
    assert out.startswith("restorerequest.pgbackup.dev/ledger-restore-")
    found = await asyncio.to_thread(cluster.custom.list_namespaced_custom_object, GROUP, VERSION, "finance",
                                    "restorerequests")
    assert [item["metadata"]["name"] for item in found["items"]] == [out.strip().split("/")[1]]


async def test_all_namespaces_flag_before_the_subcommand(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    await other_namespace_policy(cluster)
    code, out, err = await plugin("-A", "status")
    assert code == 0, err
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["finance", "ledger"], ["shop", "orders"]]
    code, out, err = await plugin("status", "--all-namespaces", "-o", "yaml")
    assert code == 0, err
    assert [row["namespace"] for row in yaml.safe_load(out)] == ["finance", "shop"]


async def test_context_and_kubeconfig_after_the_subcommand(cluster: Cluster, plugin: Plugin,
                                                           tmp_path: Path) -> None:
    """`--context` picks the context's namespace; `--kubeconfig` may come last, as kubectl allows."""
    await policy_with_status(cluster, "orders", healthy_status())
    await other_namespace_policy(cluster)
    config = yaml.safe_load(plugin.kubeconfig.read_text())
    config["contexts"].append({"name": "books", "context": {"cluster": "kmock", "user": "tester",
                                                            "namespace": "finance"}})
    kubeconfig = tmp_path / "two-contexts"
    kubeconfig.write_text(yaml.safe_dump(config))

    def direct(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        return run(list(args), out, err), out.getvalue(), err.getvalue()

    code, out, err = await asyncio.to_thread(direct, "status", "-o", "json", "--context", "books",
                                             "--kubeconfig", str(kubeconfig))
    assert code == 0, err
    assert [row["name"] for row in json.loads(out)] == ["ledger"]
    code, out, err = await asyncio.to_thread(direct, "status", "--context=books", "-n", "shop", "-o", "json",
                                             f"--kubeconfig={kubeconfig}")
    assert code == 0, err
    assert [row["name"] for row in json.loads(out)] == ["orders"]


async def test_wide_and_yaml_output_of_status_and_list(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    code, out, err = await plugin("status", "-o", "wide")
    assert code == 0, err
    header = out.splitlines()[0]
    assert "SCHEDULE" in header and "METHOD" in header
    code, out, err = await plugin("list", "orders", "-o", "wide")
    assert code == 0, err
    assert "DURATION" in out.splitlines()[0]
    code, out, err = await plugin("list", "orders", "-o", "yaml")
    assert code == 0, err
    assert [b["id"] for b in yaml.safe_load(out)] == [BACKUP_ID, "20261122T020000Z"]


async def test_restore_output_json_is_the_created_request(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    code, out, err = await plugin("restore", "orders", "--dry-run", "-o", "json")
    assert code == 0, err
    created = json.loads(out)
    assert created["kind"] == "RestoreRequest" and created["spec"]["dryRun"] is True
    assert [item["metadata"]["name"] for item in await asyncio.to_thread(restores, cluster)] == [
        created["metadata"]["name"]]


async def test_restore_no_owner_and_no_privileges_reach_the_request(cluster: Cluster, plugin: Plugin) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    code, out, err = await plugin("restore", "orders", "--no-owner", "--no-privileges", "--dry-run", "-o", "json")
    assert code == 0, err
    spec = json.loads(out)["spec"]
    assert (spec["noOwner"], spec["noPrivileges"]) == (True, True)
    code, out, err = await plugin("restore", "orders", "--dry-run", "-o", "json")
    assert code == 0, err
    assert "noOwner" not in json.loads(out)["spec"] and "noPrivileges" not in json.loads(out)["spec"]


@pytest.mark.parametrize(("args", "message"), [
    (["list", "orders", "-A"], "cannot be used with -A"),
    (["backup", "orders", "-A"], "cannot be used with -A"),
    (["backup", "orders", "-o", "wide"], "-o wide is not supported by `backup`"),
    (["status", "-o", "name"], "-o name is not supported by `status`"),
    (["status", "-o", "xml"], "-o xml is not supported by `status`"),
])
async def test_flags_a_command_cannot_use_are_usage_errors(cluster: Cluster, plugin: Plugin, args: list[str],
                                                           message: str) -> None:
    await policy_with_status(cluster, "orders", healthy_status())
    code, out, err = await plugin(*args)
    assert (code, out) == (3, "")
    assert message in err
    assert await asyncio.to_thread(backup_now_value, cluster, "orders") is None
