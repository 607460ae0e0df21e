"""e2e: the real operator against the cluster in KUBECONFIG (kind via `make e2e`, or any cluster you point at).

Skipped, with the reason shown, when no cluster is reachable or kubectl is missing. Everything is created in
a throwaway namespace that is deleted afterwards; the CRDs from crds/ are applied (and left in place).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _kubectl_binary() -> str | None:
    local = ROOT / ".tools" / "bin" / "kubectl"
    return str(local) if local.exists() else shutil.which("kubectl")


def _cluster_problem() -> str | None:
    """Why the e2e suite cannot run here, or None when it can."""
    try:
        import kubernetes.client
        import kubernetes.config

        kubernetes.config.load_kube_config()
        kubernetes.client.VersionApi().get_code(_request_timeout=5)
    except Exception as error:  # noqa: BLE001 (any failure means: no usable cluster)
        return f"no reachable Kubernetes cluster in KUBECONFIG ({type(error).__name__}: {str(error)[:200]})"
    if _kubectl_binary() is None:
        return "kubectl not found (run `make tools`)"
    return None


_PROBLEM: str | None = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    global _PROBLEM
    e2e = [item for item in items if "tests/e2e/" in str(item.fspath)]
    if not e2e:
        return
    _PROBLEM = _cluster_problem()
    if _PROBLEM:
        print(f"\ne2e suite skipped: {_PROBLEM}", file=sys.stderr)
        for item in e2e:
            item.add_marker(pytest.mark.skip(reason=_PROBLEM))


def kubectl(*args: str, input: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    kubectl_bin = _kubectl_binary()
    assert kubectl_bin is not None
    return subprocess.run([kubectl_bin, *args], input=input, capture_output=True, text=True, check=check,
                          timeout=timeout)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except subprocess.CalledProcessError as error:
            last = error.stderr
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


def get_json(*args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture(scope="session")
def crds() -> None:
    """The CRDs from crds/, applied server-side (and left in place: deleting a CRD deletes every object of it)."""
    files = sorted((ROOT / "crds").glob("*.yaml"))
    assert files, "crds/ holds no CRDs: run `make crds`"
    for crd in files:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    for crd in files:
        name = yaml.safe_load(crd.read_text())["metadata"]["name"]
        kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture(scope="session")
def namespace(crds: None) -> Iterator[str]:
    name = f"pgbackup-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def example_documents(namespace: str) -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["metadata"]["namespace"] = namespace
                docs.append(doc)
    return docs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def running_operator(namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`pgbackup-operator` as a process, watching only the test namespace, leader election on (Lease in it)."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {**os.environ, "WATCH_NAMESPACES": namespace, "POD_NAMESPACE": namespace, "POD_NAME": "e2e-operator",
           "PGBACKUP_SECRET_RETRY_SECONDS": "3"}
    port = _free_port()
    with log.open("w") as out:
        process = subprocess.Popen([str(Path(sys.executable).parent / "pgbackup-operator"),
                                    f"--liveness=http://127.0.0.1:{port}/healthz"],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        print(f"\noperator log: {log}", file=sys.stderr)
