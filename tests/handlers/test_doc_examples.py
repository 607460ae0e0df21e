"""Every BackupPolicy example of the README and docs/ applied to the emulated API with the real operator: each
becomes Ready with its CronJob once the Secrets it names exist (examples that are pieces of a spec are applied
inside a complete policy, as tests/unit/test_docs.py checks them against the CRD schema)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
import yaml

from pgbackup.api import BackupPolicy
from pgbackup.builders.secrets import referenced_secret_keys
from tests.handlers.conftest import Cluster, Operator, eventually, policy_spec
from tests.unit.test_docs import merged, resource_examples

pytestmark = pytest.mark.timeout(120)


def policy_examples() -> list[tuple[str, dict[str, Any]]]:
    """(source, spec) of every BackupPolicy example; pieces merged into a complete spec."""
    found = []
    for block in resource_examples():
        document = yaml.safe_load(block.body)
        if "apiVersion" in document:
            if document["kind"] == "BackupPolicy":
                found.append((block.source, document["spec"]))
        elif (block.marker or "BackupPolicy") == "BackupPolicy":
            piece = document["spec"] if set(document) == {"spec"} else document
            found.append((block.source, merged(policy_spec(), piece)))
    return found


async def test_every_policy_example_becomes_ready_with_a_cronjob(cluster: Cluster, operator: Operator) -> None:
    examples = policy_examples()
    assert len(examples) >= 5
    keys: dict[str, set[str]] = defaultdict(set)
    for _, spec in examples:
        for use in referenced_secret_keys(BackupPolicy.model_validate({"metadata": {"name": "x"}, "spec": spec}).spec):
            keys[use.secret].add(use.key)
    for secret, names in keys.items():
        await asyncio.to_thread(cluster.create_secret, secret, {key: "placeholder" for key in sorted(names)})
    async with operator.running():
        for index, (_, spec) in enumerate(examples):
            await asyncio.to_thread(cluster.create_policy, f"doc-example-{index}", spec)
        for index, (source, _) in enumerate(examples):
            name = f"doc-example-{index}"
            await eventually(lambda: cluster.cronjob(f"{name}-backup"), what=f"the CronJob of {source}")
            ready = await eventually(lambda: cluster.condition(name, "Ready"), what=f"a Ready condition on {source}")
            if ready["status"] != "True":  # e.g. a moment before the Secret check ran: give it its retry
                ready = await eventually(lambda: (c := cluster.condition(name, "Ready")) and c["status"] == "True" and c,
                                         what=f"Ready=True on {source} (last: {ready})")
