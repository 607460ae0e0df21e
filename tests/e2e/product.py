"""The product e2e test's namespace: what it deployed, and the waits and diagnostics the test uses.

Every wait has a real deadline and, when it runs out, fails with what the cluster showed: `kubectl describe` of
the object waited on, the namespace's pods, Jobs and Events, and the logs of the operator and of every Job."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.e2e import manifests
from tests.e2e.conftest import ROOT, kubectl

T = TypeVar("T")
CHART = ROOT / "charts" / "pgbackup-operator"
MAX_DIAGNOSTICS_CHARS = 60_000


def helm_binary() -> str | None:
    local = ROOT / ".tools" / "bin" / "helm"
    return str(local) if local.exists() else shutil.which("helm")


def plugin_binary() -> str:
    return str(Path(sys.executable).parent / "kubectl-pgbackup")


@dataclass
class Product:
    """One namespace with PostgreSQL, S3 and the operator (Helm release `release`) in it."""

    namespace: str
    release: str
    helm: str
    described: list[tuple[str, str]] = field(default_factory=list)

    # ------------------------------------------------------------------ actions

    def apply(self, documents: Sequence[dict[str, Any]]) -> None:
        """kubectl apply, documents on stdin (Secrets included: nothing on the command line)."""
        for document in documents:
            kind, name = document["kind"].lower(), document["metadata"]["name"]
            if kind not in ("secret", "configmap", "service") and (kind, name) not in self.described:
                self.described.append((kind, name))
        kubectl("apply", "-n", self.namespace, "-f", "-", input=yaml.safe_dump_all(documents))

    def install_operator(self, image: str = manifests.OPERATOR_IMAGE) -> None:
        values = manifests.operator_values(self.namespace, image)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
            yaml.safe_dump(values, file)
            file.flush()
            done = subprocess.run([self.helm, "upgrade", "--install", self.release, str(CHART), "-n", self.namespace,
                                   "-f", file.name, "--wait", "--timeout", "5m"],
                                  capture_output=True, text=True, timeout=360)
        if done.returncode != 0:
            raise AssertionError(f"helm install of the operator failed ({done.returncode}): {done.stderr.strip()}\n"
                                 f"{self.diagnostics()}")

    def teardown(self) -> None:
        """The custom resources first, while the operator runs (a finalizer it set is then removed by it), then
        the release, then the namespace (not waited for)."""
        kubectl("delete", "restorerequests,backuppolicies", "--all", "-n", self.namespace, "--wait=true",
                "--timeout=120s", check=False, timeout=150)
        subprocess.run([self.helm, "uninstall", self.release, "-n", self.namespace, "--wait", "--timeout", "2m"],
                       capture_output=True, text=True, timeout=180)
        kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)

    def psql(self, sql: str, database: str = manifests.DATABASE) -> str:
        """SQL in the PostgreSQL pod as the superuser over the local socket (no password on any command line)."""
        done = kubectl("exec", "-n", self.namespace, f"{manifests.POSTGRES}-0", "-c", "postgres", "--",
                       "psql", "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-tAc", sql, check=False)
        if done.returncode != 0:
            raise AssertionError(f"psql on {database} failed: {done.stderr.strip()}\nSQL: {sql}")
        return done.stdout.strip()

    def counts(self, database: str, tables: Sequence[str]) -> dict[str, int]:
        return {table: int(self.psql(f"select count(*) from {table}", database)) for table in tables}

    def plugin(self, *args: str, timeout: float = 1500) -> tuple[int, str, str]:
        """`kubectl pgbackup ARGS -n NAMESPACE` with the suite's kubeconfig."""
        done = subprocess.run([plugin_binary(), *args, "-n", self.namespace, "--poll-interval", "3"],
                              capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
        return done.returncode, done.stdout, done.stderr

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(kubectl("get", kind, name, "-n", self.namespace, "-o", "json").stdout)
        return found

    def status(self, kind: str, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.get(kind, name).get("status") or {}
        return status

    # ------------------------------------------------------------------ waiting

    def wait(self, check: Callable[[], T | None], timeout: float, what: str, interval: float = 3) -> T:
        """Poll `check` until it returns something truthy; on timeout fail with the cluster's state."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                result = check()
                if result:
                    return result
                last = result
            except (subprocess.CalledProcessError, AssertionError, KeyError) as error:
                last = getattr(error, "stderr", None) or error
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last seen: {last!r}\n"
                                     f"{self.diagnostics()}")
            time.sleep(interval)

    def condition(self, kind: str, name: str, type: str) -> dict[str, Any] | None:
        return next((c for c in self.status(kind, name).get("conditions") or [] if c.get("type") == type), None)

    def wait_condition(self, kind: str, name: str, type: str, timeout: float) -> dict[str, Any]:
        """The condition once it is True."""
        def true() -> dict[str, Any] | None:
            found = self.condition(kind, name, type)
            return found if found is not None and found.get("status") == "True" else None

        return self.wait(true, timeout, f"{type}=True on {kind} {name}")

    def wait_restore(self, name: str, timeout: float) -> dict[str, Any]:
        """The RestoreRequest's status once it is Succeeded or Failed."""
        def finished() -> dict[str, Any] | None:
            status = self.status("restorerequest", name)
            return status if status.get("phase") in ("Succeeded", "Failed") else None

        return self.wait(finished, timeout, f"RestoreRequest {name} to finish")

    # ------------------------------------------------------------------ diagnostics

    def diagnostics(self) -> str:
        """What a person would look at: objects, describe, Events, logs of the operator and of each Job."""
        ns = self.namespace
        sections = [("pods, jobs, policies, restores",
                     ["get", "pods,jobs,deployments,statefulsets,backuppolicies,restorerequests", "-n", ns, "-o",
                      "wide"])]
        sections += [(f"describe {kind}/{name}", ["describe", kind, name, "-n", ns]) for kind, name in self.described]
        sections += [("events", ["get", "events", "-n", ns, "--sort-by=.lastTimestamp"]),
                     ("operator log", ["logs", "-n", ns, "-l", f"app.kubernetes.io/instance={self.release}",
                                       "--tail=200", "--all-containers"])]
        jobs = kubectl("get", "jobs", "-n", ns, "-o", "name", check=False).stdout.split()
        sections += [(f"log of {job}", ["logs", "-n", ns, job, "--tail=80", "--all-containers"]) for job in jobs]
        wal = kubectl("get", "deployments", "-n", ns, "-o", "name", check=False).stdout.split()
        sections += [(f"log of {d}", ["logs", "-n", ns, d, "--tail=80"]) for d in wal if d.endswith("-wal")]
        text = []
        for title, args in sections:
            done = kubectl(*args, check=False)
            text.append(f"----- {title} (kubectl {' '.join(args)})\n{(done.stdout + done.stderr).strip()}")
        joined = "\n".join(text)
        return joined if len(joined) <= MAX_DIAGNOSTICS_CHARS else joined[-MAX_DIAGNOSTICS_CHARS:]

    @contextmanager
    def explained(self) -> Iterator[None]:
        """Any assertion failing inside carries the diagnostics."""
        try:
            yield
        except AssertionError as error:
            if "----- pods, jobs" in str(error):
                raise
            raise AssertionError(f"{error}\n{self.diagnostics()}") from None
