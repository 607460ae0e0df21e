"""Status read-modify-writes (handlers/kube.py): BackupPolicies and RestoreRequests each have two handlers writing
their status, so a write computed from a stale read is refused (409) and redone from a fresh read, never lost.
Both kinds go through one function; these tests hold the behaviour for each."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgbackup.handlers import kube
from tests.handlers.conftest import NAMESPACE, Cluster

GROUP, VERSION = "pgbackup.dev", "v1alpha1"
KINDS: dict[str, tuple[str, Callable[..., dict[str, Any] | None]]] = {
    "BackupPolicy": ("backuppolicies", kube.update_policy_status),
    "RestoreRequest": ("restorerequests", kube.update_restore_status),
}


def create(cluster: Cluster, kind: str, name: str) -> None:
    plural = KINDS[kind][0]
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {}})


def write_condition_elsewhere(cluster: Cluster, kind: str, name: str, condition_type: str) -> None:
    """Another handler's status write (the emulator gives the object a new resourceVersion)."""
    plural = KINDS[kind][0]
    current = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name)
    conditions = [*(current.get("status") or {}).get("conditions", []), {"type": condition_type, "status": "True"}]
    cluster.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, NAMESPACE, plural, name, {"status": {"conditions": conditions}},
        _content_type="application/merge-patch+json")


def status_of(cluster: Cluster, kind: str, name: str) -> dict[str, Any]:
    plural = KINDS[kind][0]
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name).get("status") or {}


def adding(condition_type: str) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
    def changes(obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        return {"conditions": [*status.get("conditions", []), {"type": condition_type, "status": "True"}]}
    return changes


@pytest.mark.parametrize("kind", KINDS)
async def test_a_write_from_a_stale_read_is_redone_and_keeps_the_other_writers_change(
        cluster: Cluster, kind: str) -> None:
    await asyncio.to_thread(create, cluster, kind, "orders")
    reads: list[list[str]] = []

    def changes(obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        reads.append([c["type"] for c in status.get("conditions", [])])
        if len(reads) == 1:  # the other handler writes between this read and this write
            write_condition_elsewhere(cluster, kind, "orders", "Ready")
        return adding("Verified")(obj, status)

    update = KINDS[kind][1]
    returned = await asyncio.to_thread(update, NAMESPACE, "orders", changes)

    assert reads == [[], ["Ready"]], "the refused write must be recomputed from a fresh read"
    assert returned is not None and returned["metadata"]["name"] == "orders"
    types = [c["type"] for c in (await asyncio.to_thread(status_of, cluster, kind, "orders"))["conditions"]]
    assert types == ["Ready", "Verified"], "neither writer's condition may be lost"


@pytest.mark.parametrize("kind", KINDS)
async def test_nothing_to_change_writes_nothing(cluster: Cluster, kind: str) -> None:
    await asyncio.to_thread(create, cluster, kind, "orders")
    before = await asyncio.to_thread(status_of, cluster, kind, "orders")
    returned = await asyncio.to_thread(KINDS[kind][1], NAMESPACE, "orders", lambda obj, status: {})
    assert returned is not None
    assert await asyncio.to_thread(status_of, cluster, kind, "orders") == before


@pytest.mark.parametrize("kind", KINDS)
async def test_an_object_that_is_gone_is_not_written(cluster: Cluster, kind: str) -> None:
    called: list[bool] = []
    returned = await asyncio.to_thread(
        KINDS[kind][1], NAMESPACE, "deleted", lambda obj, status: called.append(True) or {"phase": "x"})
    assert returned is None and not called


@pytest.mark.parametrize("kind", KINDS)
async def test_an_object_that_never_stops_changing_is_an_error_naming_it(cluster: Cluster, kind: str) -> None:
    await asyncio.to_thread(create, cluster, kind, "orders")
    reads: list[int] = []

    def changes(obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        reads.append(1)
        write_condition_elsewhere(cluster, kind, "orders", f"Other{len(reads)}")
        return adding("Verified")(obj, status)

    with pytest.raises(RuntimeError, match=rf"^{kind} {NAMESPACE}/orders changed 3 times"):
        await asyncio.to_thread(KINDS[kind][1], NAMESPACE, "orders", changes, 3)
    assert len(reads) == 3
    types = [c["type"] for c in (await asyncio.to_thread(status_of, cluster, kind, "orders"))["conditions"]]
    assert "Verified" not in types


def test_one_status_read_modify_write_loop_serves_both_kinds() -> None:
    """Issue #13: the loop was written twice (policies, RestoreRequests) and could drift apart; one owner now."""
    source = Path(kube.__file__).read_text()
    loops = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.For)
             and any(isinstance(inner, ast.Call) and ast.unparse(inner).startswith("is_status(error, 409)")
                     for inner in ast.walk(node))]
    assert len(loops) == 1, [ast.unparse(loop).splitlines()[0] for loop in loops]
