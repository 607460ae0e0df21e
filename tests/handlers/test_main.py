"""The `pgbackup-operator` entry point as a process: kubeconfig login, JSON logs, liveness endpoint,
the configured image, and a clean exit on SIGTERM. (Cluster-wide: kmock 0.8 cannot list namespaces, which
kopf does for WATCH_NAMESPACES; the e2e suite runs the namespaced mode.)"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import urllib.request
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.handlers.conftest import Cluster, eventually, policy_spec

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_kubeconfig(path: Path, server: str) -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "kmock", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
    }))


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
        return int(response.status)


async def test_operator_process_runs_and_stops_cleanly(cluster: Cluster, secrets: None, emulator: Any,
                                                       tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, str(emulator.url).rstrip("/"))
    port = free_port()
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig),
           "LOG_FORMAT": "json", "PGBACKUP_IMAGE": "registry.example/pgbackup:1.2.3"}
    process = subprocess.Popen([str(Path(sys.executable).parent / "pgbackup-operator"),
                                f"--liveness=http://127.0.0.1:{port}/healthz"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = ""
    try:
        await asyncio.to_thread(cluster.create_policy, "orders", policy_spec())
        cronjob = await eventually(lambda: cluster.cronjob("orders-backup"), timeout=20, what="the CronJob")
        assert await eventually(lambda: healthz(port) == 200, what="the liveness endpoint")
    except AssertionError as error:
        process.kill()
        output, _ = await asyncio.to_thread(process.communicate, timeout=20)
        raise AssertionError(f"{error}\noperator output:\n{output[-5000:]}") from None
    finally:
        if not output:
            process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.to_thread(process.communicate, timeout=20)
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/pgbackup:1.2.3"
    assert process.returncode == 0, output
    json_lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any("CronJob shop/orders-backup reconciled" in line.get("message", "") for line in json_lines), output
    assert "fake-password-for-tests" not in output


def test_watch_namespaces_and_settings_come_from_the_environment() -> None:
    from pgbackup.handlers.config import OperatorConfig

    config = OperatorConfig.from_env({"WATCH_NAMESPACES": " shop, , billing ", "PGBACKUP_IMAGE": "img:1",
                                      "PGBACKUP_JOB_SERVICE_ACCOUNT": "pgbackup-job", "LOG_FORMAT": "JSON"})
    assert config.namespaces == ("shop", "billing")
    assert (config.image, config.job_service_account, config.log_format) == ("img:1", "pgbackup-job", "json")
    assert OperatorConfig.from_env({}).namespaces == ()  # all namespaces
    assert OperatorConfig.from_env({}).image.startswith("ghcr.io/pgbackup/pgbackup-operator:")


def test_version_prints_the_package_version_without_a_cluster(tmp_path: Path) -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "pgbackup-operator"), "--version"],
                          env={"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path),
                               "KUBECONFIG": str(tmp_path / "none")},
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, f"pgbackup-operator {version('pgbackup-operator')}\n"), done.stderr


def test_the_operator_process_loads_no_runner_code_nor_its_libraries() -> None:
    """boto3, psycopg and the runner are the backup Jobs' business: imported by the operator they would only cost
    it memory (and start-up time) in every cluster."""
    listed = subprocess.run(
        [sys.executable, "-c", "import sys, pgbackup.handlers.main; print('\\n'.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, timeout=50)
    loaded = set(listed.stdout.split())
    assert "pgbackup.handlers.main" in loaded
    runner_libraries = {"boto3", "botocore", "s3transfer", "psycopg", "psycopg_pool"}
    assert sorted(name for name in loaded
                  if name.split(".")[0] in runner_libraries or name.startswith("pgbackup.runner")) == []
