"""The scale benchmark (scripts/bench_scale.py; `make bench-scale` runs it with 100 and 1,000 policies): with 5
policies it runs the operator as its own process against kmock and reports every figure; its request-counting proxy
counts what passes through it by verb; --cluster refuses clearly without a cluster."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import kubernetes.client
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import bench_scale  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def test_the_scale_benchmark_runs_with_five_policies(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_scale.py"), "--policies", "5",  # noqa: S603
                          "--idle-seconds", "2", "--settle-seconds", "2", "--ready-timeout", "120",
                          "--json", str(out)], capture_output=True, text=True, timeout=170, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    [result] = json.loads(out.read_text())
    assert result["policies"] == 5 and result["ready_seconds"] > 0 and result["api_server"] == "kmock"
    assert result["reconcile_peak_rss_mib"] > 0 and result["idle_rss_mib"] > 0
    assert result["idle_requests_per_minute"] == {} and result["reapply_writes"] == 0
    assert "| all Ready after (s) |" in run.stdout and "5 policies (kmock)" in run.stdout


def test_cluster_mode_refuses_without_a_kubeconfig(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "missing")}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_scale.py"), "--cluster"],  # noqa: S603
                         capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert run.returncode == bench_scale.USAGE
    assert "refusing to run: --cluster benchmarks the cluster of KUBECONFIG, and there is none" in run.stderr
    assert str(tmp_path / "missing") in run.stderr and run.stdout == ""


def test_cluster_mode_refuses_without_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(bench_scale.shutil, "which", lambda *_args, **_kwargs: None)
    with pytest.raises(bench_scale.Refused, match=r"needs kubectl .*`make tools`"):
        bench_scale.check_cluster()


def test_policies_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        bench_scale.main(["--policies", "0"])


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", "/api", {}, ("discovery", "/api")),
    ("GET", "/apis/pgbackup.dev/v1alpha1", {}, ("discovery", "/apis/pgbackup.dev/v1alpha1")),
    ("GET", "/apis/pgbackup.dev/v1alpha1/backuppolicies", {"watch": "true"}, ("watch", "backuppolicies")),
    ("GET", "/apis/pgbackup.dev/v1alpha1/namespaces/shop/backuppolicies", {}, ("list", "backuppolicies")),
    ("GET", "/apis/pgbackup.dev/v1alpha1/namespaces/shop/backuppolicies/orders", {}, ("get", "backuppolicies")),
    ("PATCH", "/apis/pgbackup.dev/v1alpha1/namespaces/shop/backuppolicies/orders/status", {},
     ("patch", "backuppolicies/status")),
    ("POST", "/api/v1/namespaces/shop/events", {}, ("create", "events")),
    ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ops/leases/pgbackup", {}, ("update", "leases")),
    ("DELETE", "/apis/batch/v1/namespaces/shop/jobs/orders-1", {}, ("delete", "jobs")),
    ("GET", "/api/v1/namespaces", {"watch": "1"}, ("watch", "namespaces")),
    ("GET", "/api/v1/namespaces/shop", {}, ("get", "namespaces")),
])
def test_requests_are_classified_as_rbac_names_them(method: str, path: str, query: dict[str, str],
                                                     expected: tuple[str, str]) -> None:
    assert bench_scale.classify(method, path, query) == expected


async def test_the_proxy_counts_what_passes_through_it_against_kmock() -> None:
    async with bench_scale.emulated_api() as emulator, \
            bench_scale.CountingProxy(str(emulator.url).rstrip("/")).running() as proxy:
        def through_the_proxy() -> dict[str, object]:
            with bench_scale.client(proxy.url) as (core, custom):
                core.create_namespaced_secret("bench", {"apiVersion": "v1", "kind": "Secret",
                                                        "metadata": {"name": "s", "namespace": "bench"}})
                body = bench_scale.policy_body(1, "bench")
                custom.create_namespaced_custom_object("pgbackup.dev", "v1alpha1", "bench", "backuppolicies", body)
                custom.patch_namespaced_custom_object_status("pgbackup.dev", "v1alpha1", "bench", "backuppolicies",
                                                             "p0001", {"status": {"cronJobName": "x"}})
                core.read_namespaced_secret("s", "bench")
                try:
                    core.read_namespaced_secret("missing", "bench")
                except kubernetes.client.ApiException as error:
                    assert error.status == 404  # errors pass through as they are
                return custom.list_namespaced_custom_object("pgbackup.dev", "v1alpha1", "bench", "backuppolicies")

        listed = await asyncio.to_thread(through_the_proxy)
    assert [item["status"] for item in listed["items"]] == [{"cronJobName": "x"}]  # type: ignore[index]
    assert bench_scale.ready_in(emulator)() == 0  # no Ready condition
    assert [(seen.verb, seen.resource) for seen in proxy.seen] == [
        ("create", "secrets"), ("create", "backuppolicies"), ("patch", "backuppolicies/status"),
        ("get", "secrets"), ("get", "secrets"), ("list", "backuppolicies")]
    assert '"cronJobName": "x"' in proxy.seen[2].body and proxy.seen[3].body == ""  # write bodies kept, for diagnosis
