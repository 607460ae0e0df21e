"""On a real API server: the CRDs and every example apply, the operator makes CronJobs the server accepts,
Jobs from them are accepted (server-side dry run), and deleting a policy garbage-collects its CronJob."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pgbackup.builders.names import cronjob_name
from tests.e2e.conftest import example_documents, get_json, kubectl, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_examples_apply_and_get_accepted_cronjobs(namespace: str, running_operator: Path) -> None:
    docs = example_documents(namespace)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    policies = [d["metadata"]["name"] for d in docs if d["kind"] == "BackupPolicy"]
    assert policies
    for policy in policies:
        name = cronjob_name(policy)
        cronjob = wait_for(lambda: get_json("cronjob", name, "-n", namespace), 90, f"CronJob {name}")
        assert cronjob["metadata"]["ownerReferences"][0]["name"] == policy
        ready = wait_for(lambda: next((c for c in get_json("backuppolicy", policy, "-n", namespace)
                                       .get("status", {}).get("conditions", []) if c["type"] == "Ready"), None),
                         60, f"Ready on {policy}")
        assert ready["status"] == "True", ready
        dry_run = kubectl("create", "job", f"{name[:40]}-dryrun", f"--from=cronjob/{name}", "-n", namespace,
                          "--dry-run=server", "-o", "json")
        assert json.loads(dry_run.stdout)["kind"] == "Job"
    lease = get_json("lease", "pgbackup-operator-leader", "-n", namespace)
    assert lease["spec"]["holderIdentity"] == "e2e-operator"


def test_deleting_a_policy_garbage_collects_its_cronjob(namespace: str, running_operator: Path) -> None:
    docs = [d for d in example_documents(namespace) if d["kind"] in {"BackupPolicy", "Secret"}]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    policy = next(d["metadata"]["name"] for d in docs if d["kind"] == "BackupPolicy")
    name = cronjob_name(policy)
    wait_for(lambda: get_json("cronjob", name, "-n", namespace), 90, f"CronJob {name}")
    kubectl("delete", "backuppolicy", policy, "-n", namespace, "--wait=true")
    wait_for(lambda: kubectl("get", "cronjob", name, "-n", namespace, "--ignore-not-found", "-o", "name").stdout == "",
             90, f"garbage collection of CronJob {name}")
