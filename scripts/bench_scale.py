"""Scale benchmark of the operator: N BackupPolicies against an emulated API server (kmock, in this process), the
operator run as its own process (`pgbackup-operator`), so that its RSS and CPU are measured alone.

    .venv/bin/python scripts/bench_scale.py --policies 100 --policies 1000 [--idle-seconds 120] [--json out.json]

Reported per N: seconds until every policy is Ready=True; operator peak RSS and CPU (% of one core) while
reconciling; RSS and CPU over the idle window; the operator's API requests per minute at idle, by verb; and the
writes (create/patch/update/delete) the operator makes after every policy is re-applied unchanged.
One policy in ten has spec.objectives (evaluated by the background loop every interval).

Not a test (`make test` does not run it); tests/handlers/test_bench_scale.py runs it once with N=5.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import kmock
import kubernetes.client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.handlers.conftest import RESOURCES, Emulator  # noqa: E402  (the emulator the handler tests use)
from tests.handlers.rbac_check import rbac_verb  # noqa: E402

NAMESPACE = "bench"
GROUP, VERSION, PLURAL = "pgbackup.dev", "v1alpha1", "backuppolicies"
TICKS = os.sysconf("SC_CLK_TCK")
WRITES = {"create", "patch", "update", "delete"}


@dataclass
class Result:
    policies: int
    ready_seconds: float
    reconcile_peak_rss_mib: float
    reconcile_cpu_percent: float
    idle_rss_mib: float
    idle_cpu_percent: float
    idle_requests_per_minute: dict[str, float]
    idle_requests_per_policy_per_5min: float
    reapply_writes: int


def spec(index: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "database": {"host": f"db{index}.{NAMESPACE}.svc", "credentialsSecret": {"name": "db-creds"}},
        "schedule": f"{index % 60} 2 * * *",
        "storage": {"s3": {"bucket": "backups", "prefix": f"policy-{index}", "endpoint": "http://minio:9000",
                           "forcePathStyle": True, "credentialsSecret": {"name": "s3-creds"}}},
        "retention": {"keepLast": 7},
    }
    if index % 10 == 0:
        body["objectives"] = {"rpo": "24h"}
    return body


def policy_body(index: int) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BackupPolicy",
            "metadata": {"name": f"p{index:04d}", "namespace": NAMESPACE, "generation": 1, "resourceVersion": "1",
                         "uid": f"00000000-0000-0000-0000-{index:012d}"},
            "spec": spec(index)}


class Process:
    """RSS and CPU of one process from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def memory_mib(self, key: str) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return 0.0


def from_operator(request: Any) -> bool:
    return str(request.headers.get("User-Agent", "")).startswith(("kopf", "pgbackup-operator"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(every)


async def run_one(count: int, idle_seconds: float, settle_seconds: float, ready_timeout: float) -> Result:
    async with Emulator() as emulator, kmock.Server(emulator):
        for resource, info in RESOURCES.items():
            emulator.resources[resource] = info
        url = str(emulator.url).rstrip("/")
        configuration = kubernetes.client.Configuration(host=url)
        with kubernetes.client.ApiClient(configuration) as api, tempfile.TemporaryDirectory() as scratch:
            core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
            for name, data in (("db-creds", {"username": "backup", "password": "bench"}),
                               ("s3-creds", {"accessKeyId": "a", "secretAccessKey": "b"})):
                await asyncio.to_thread(core.create_namespaced_secret, NAMESPACE, {
                    "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE},
                    "stringData": data})
            kubeconfig = Path(scratch) / "kubeconfig"
            kubeconfig.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "bench",
                "clusters": [{"name": "bench", "cluster": {"server": url, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "bench", "user": {"token": "bench"}}],
                "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}]}))
            env = {**os.environ, "KUBECONFIG": str(kubeconfig), "LEADER_ELECTION": "false", "METRICS_PORT": "0",
                   "LOG_FORMAT": "json"}
            env.pop("POD_NAMESPACE", None)
            env.pop("WATCH_NAMESPACES", None)
            log = open(Path(scratch) / "operator.log", "wb")  # noqa: SIM115 - closed below
            operator = subprocess.Popen(  # noqa: S603 - our own entry point
                [str(Path(sys.executable).parent / "pgbackup-operator"),
                 f"--liveness=http://127.0.0.1:{free_port()}/healthz"], env=env, stdout=log, stderr=log)
            try:
                proc = Process(operator.pid)
                started = time.monotonic()
                cpu_started = proc.cpu_seconds()
                for index in range(count):
                    await asyncio.to_thread(custom.create_namespaced_custom_object, GROUP, VERSION, NAMESPACE,
                                            PLURAL, policy_body(index))

                def all_ready() -> bool:
                    if operator.poll() is not None:
                        raise RuntimeError(f"the operator exited with {operator.returncode}")
                    items = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
                    return len(items) == count and all(
                        any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in (item.get("status") or {}).get("conditions") or []) for item in items)

                # Listing every policy costs the emulator too: poll less often with more of them.
                await wait_for(all_ready, ready_timeout, f"{count} policies Ready", every=max(0.5, count / 250))
                ready_seconds = time.monotonic() - started
                print(f"{count} policies Ready after {ready_seconds:.1f}s", file=sys.stderr, flush=True)
                reconcile_cpu = (proc.cpu_seconds() - cpu_started) / ready_seconds * 100
                reconcile_peak = proc.memory_mib("VmHWM")

                await asyncio.sleep(settle_seconds)  # the last handlers' bookkeeping lands
                since, cpu_idle, idle_started = len(list(emulator)), proc.cpu_seconds(), time.monotonic()
                await asyncio.sleep(idle_seconds)
                elapsed = time.monotonic() - idle_started
                idle_cpu = (proc.cpu_seconds() - cpu_idle) / elapsed * 100
                idle_rss = proc.memory_mib("VmRSS")
                verbs = Counter(rbac_verb(r) or str(r.method) for r in list(emulator)[since:] if from_operator(r))
                verbs.pop("watch", None)  # long-lived streams, not requests per minute
                per_minute = {verb: round(n * 60 / elapsed, 1) for verb, n in sorted(verbs.items())}
                detail = Counter(f"{rbac_verb(r)} {r.resource.plural if r.resource else r.path} "
                                 f"{str(r.headers.get('User-Agent', '')).split('/')[0]}"
                                 for r in list(emulator)[since:] if from_operator(r) and rbac_verb(r) != "watch")
                print(f"{count} policies, idle requests: {dict(detail)}", file=sys.stderr, flush=True)

                since = len(list(emulator))
                for index in range(count):
                    await asyncio.to_thread(custom.patch_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL,
                                            f"p{index:04d}", {"spec": spec(index)})
                await asyncio.sleep(settle_seconds)
                reapply = sum(1 for r in list(emulator)[since:] if from_operator(r) and rbac_verb(r) in WRITES)
            finally:
                operator.terminate()
                try:
                    operator.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    operator.kill()
                    operator.wait()
                log.close()
    total = sum(per_minute.values())
    return Result(count, round(ready_seconds, 1), round(reconcile_peak, 1), round(reconcile_cpu, 1),
                  round(idle_rss, 1), round(idle_cpu, 2), per_minute, round(total * 5 / count, 3), reapply)


def table(results: list[Result]) -> str:
    rows = [("policies", [str(r.policies) for r in results]),
            ("all Ready after (s)", [f"{r.ready_seconds:g}" for r in results]),
            ("peak RSS while reconciling (MiB)", [f"{r.reconcile_peak_rss_mib:g}" for r in results]),
            ("CPU while reconciling (% of a core)", [f"{r.reconcile_cpu_percent:g}" for r in results]),
            ("RSS at idle (MiB)", [f"{r.idle_rss_mib:g}" for r in results]),
            ("CPU at idle (% of a core)", [f"{r.idle_cpu_percent:g}" for r in results]),
            ("API requests per minute at idle", [", ".join(f"{v} {n:g}" for v, n in r.idle_requests_per_minute.items())
                                                 or "0" for r in results]),
            ("requests per policy per 5 min at idle", [f"{r.idle_requests_per_policy_per_5min:g}" for r in results]),
            ("writes after re-applying every policy unchanged", [str(r.reapply_writes) for r in results])]
    lines = ["| | " + " | ".join(f"{r.policies} policies" for r in results) + " |",
             "|---|" + "---:|" * len(results)]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows[1:]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", type=int, action="append", help="N (repeat for several runs; default 100)")
    parser.add_argument("--idle-seconds", type=float, default=120.0, help="length of the idle window")
    parser.add_argument("--settle-seconds", type=float, default=10.0, help="pause before the idle window and "
                        "after the re-apply")
    parser.add_argument("--ready-timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = []
    for count in args.policies or [100]:
        results.append(asyncio.run(run_one(count, args.idle_seconds, args.settle_seconds, args.ready_timeout)))
        print(json.dumps(asdict(results[-1])), file=sys.stderr, flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
