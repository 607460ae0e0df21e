"""The Argo CD health checks (argocd/*.lua), run by Debian's lua5.4 against sample objects, the way Argo CD
runs them: a global `obj` holding the resource, the script returning `hs` with status and message."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
POLICY_LUA = ROOT / "argocd" / "backuppolicy.lua"
RESTORE_LUA = ROOT / "argocd" / "restorerequest.lua"
LUA = shutil.which("lua5.4")

if LUA is None:
    print("test_argocd_health: skipped, lua5.4 is not installed (apt-get install lua5.4, or scripts/install-deps.sh)")
needs_lua = pytest.mark.skipif(LUA is None, reason="lua5.4 is not installed: apt-get install lua5.4")


def lua_literal(value: Any) -> str:
    """A Lua table constructor for a JSON-like value (lua5.4 has no JSON library)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid Lua escapes for these texts
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(item) for item in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{json.dumps(key)}] = {lua_literal(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as Lua")


def health(script: Path, obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    harness = tmp_path / "harness.lua"
    harness.write_text(f"obj = {lua_literal(obj)}\nlocal hs = dofile({json.dumps(str(script))})\n"
                       "io.write(hs.status, '\\n', hs.message or '', '\\n')\n")
    done = subprocess.run([str(LUA), str(harness)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    status, message = done.stdout.split("\n")[:2]
    return status, message


def policy(generation: int = 3, observed: int | None = 3, **conditions: str) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": kind, "status": value, "reason": f"{kind}{value}",
                                              "message": f"{kind} is {value}"} for kind, value in conditions.items()]}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"apiVersion": "pgbackup.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "orders", "namespace": "shop", "generation": generation}, "spec": {}, "status": status}


@needs_lua
def test_lua_literal_round_trips_through_lua(tmp_path: Path) -> None:
    script = tmp_path / "echo.lua"
    script.write_text('hs = {status = obj.a[2] .. "|" .. obj["b-c"].d, message = tostring(obj.e)}\nreturn hs\n')
    assert health(script, {"a": ["x", "y \"q\""], "b-c": {"d": "z"}, "e": False}, tmp_path) == ('y "q"|z', "false")


@needs_lua
@pytest.mark.parametrize(("obj", "expected"), [
    (policy(Ready="True", LastBackupSucceeded="True", Verified="True"), "Healthy"),
    (policy(Ready="True"), "Healthy"),
    (policy(Ready="False", LastBackupSucceeded="True"), "Degraded"),
    (policy(Ready="True", LastBackupSucceeded="False"), "Degraded"),
    (policy(Ready="True", LastBackupSucceeded="True", Verified="False"), "Degraded"),
    (policy(generation=4, observed=3, Ready="True"), "Progressing"),
    (policy(observed=None, Ready="True"), "Progressing"),
    (policy(Ready="Unknown"), "Progressing"),
    ({"metadata": {"name": "orders", "generation": 1}, "spec": {}}, "Progressing"),
], ids=["all-true", "ready-only", "not-ready", "last-backup-failed", "verification-failed", "generation-behind",
        "never-observed", "ready-unknown", "no-status"])
def test_backup_policy_health(obj: dict[str, Any], expected: str, tmp_path: Path) -> None:
    assert health(POLICY_LUA, obj, tmp_path)[0] == expected


@needs_lua
def test_degraded_policy_says_which_condition_and_why(tmp_path: Path) -> None:
    status, message = health(POLICY_LUA, policy(Ready="True", LastBackupSucceeded="False"), tmp_path)
    assert (status, message) == ("Degraded", "LastBackupSucceeded: LastBackupSucceeded is False")


@needs_lua
@pytest.mark.parametrize(("phase", "expected"), [
    (None, "Progressing"), ("Pending", "Progressing"), ("Planning", "Progressing"), ("Running", "Progressing"),
    ("Succeeded", "Healthy"), ("Failed", "Degraded"),
])
def test_restore_request_health(phase: str | None, expected: str, tmp_path: Path) -> None:
    obj: dict[str, Any] = {"metadata": {"name": "r1"}, "spec": {"policyRef": {"name": "orders"}}}
    if phase is not None:
        obj["status"] = {"phase": phase, "plan": {"backup": "20261123T020000Z", "steps": ["download", "restore"]}}
    assert health(RESTORE_LUA, obj, tmp_path)[0] == expected


@needs_lua
def test_failed_restore_carries_the_error(tmp_path: Path) -> None:
    obj = {"metadata": {"name": "r1"}, "status": {"phase": "Failed", "error": "backup 20261123T020000Z not found"}}
    assert health(RESTORE_LUA, obj, tmp_path) == ("Degraded", "Restore failed: backup 20261123T020000Z not found")


def test_the_docs_show_the_tested_lua() -> None:
    """The Argo CD page shows (and its jq command installs) exactly the files these tests run, by inclusion."""
    page = (ROOT / "docs" / "monitoring.md").read_text()
    for lua in (POLICY_LUA, RESTORE_LUA):
        path = lua.relative_to(ROOT).as_posix()
        assert f'--8<-- "{path}"' in page, f"docs/monitoring.md no longer includes {path}"
        assert "--rawfile" in page and path in page
