"""Scale benchmark of the operator: N BackupPolicies against an API server, the operator run as its own process
(`pgbackup-operator`), so that its RSS and CPU are measured alone, and its API requests counted by a small HTTP
proxy between it and the API server (the benchmark's own requests do not pass through it).

    .venv/bin/python scripts/bench_scale.py --policies 100 --policies 1000 [--idle-seconds 120] [--json out.json]
    .venv/bin/python scripts/bench_scale.py --cluster --policies 1000      # the cluster of KUBECONFIG

The API server is the kmock emulator of the handler tests (in this process) unless --cluster is given: then the
current context of KUBECONFIG, reached through `kubectl proxy` (so any authentication kubectl supports works; the
operator acts with your credentials, not its ServiceAccount). It needs the CRDs installed (`kubectl apply -f crds/`),
creates a scratch namespace pgbackup-bench-<random>, runs the operator watching only that namespace, creates the
policies suspended (no backup Job ever runs) and deletes the namespace at the end.

Reported per N: seconds until every policy is Ready=True; operator peak RSS and CPU (% of one core) while
reconciling; RSS and CPU over the idle window; the operator's API requests per minute at idle, by verb; and the
writes (create/patch/update/delete) the operator makes after every policy is re-applied unchanged. One policy in ten
has spec.objectives (evaluated by the background loop every interval).

Not a test (`make test` does not run it); tests/handlers/test_bench_scale.py runs it once with N=5.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kubernetes.client
from aiohttp import web
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.handlers.conftest import RESOURCES, Emulator  # noqa: E402  (the emulator the handler tests use)

NAMESPACE = "bench"
GROUP, VERSION, PLURAL = "pgbackup.dev", "v1alpha1", "backuppolicies"
TICKS = os.sysconf("SC_CLK_TCK")
WRITES = {"create", "patch", "update", "delete"}
USAGE = 3  # exit code: the arguments or the environment do not allow the run


class Refused(Exception):
    """The benchmark cannot run as asked; the message says why and what to do."""


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
    api_server: str = "kmock"


def spec(index: int, suspend: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "database": {"host": f"db{index}.{NAMESPACE}.svc", "credentialsSecret": {"name": "db-creds"}},
        "schedule": f"{index % 60} 2 * * *",
        "storage": {"s3": {"bucket": "backups", "prefix": f"policy-{index}", "endpoint": "http://minio:9000",
                           "forcePathStyle": True, "credentialsSecret": {"name": "s3-creds"}}},
        "retention": {"keepLast": 7},
    }
    if suspend:
        body["suspend"] = True
    if index % 10 == 0:
        body["objectives"] = {"rpo": "24h"}
    return body


def policy_body(index: int, namespace: str, cluster: bool = False) -> dict[str, Any]:
    """The index-th policy; in a real cluster suspended (its CronJob never starts a Job), in the emulator with
    what only an API server fills in (uid, generation)."""
    metadata: dict[str, Any] = {"name": f"p{index:04d}", "namespace": namespace}
    if not cluster:
        metadata.update(uid=f"00000000-0000-0000-0000-{index:012d}", generation=1)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BackupPolicy", "metadata": metadata,
            "spec": spec(index, suspend=cluster)}


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.5,
                   in_loop: bool = False) -> None:
    """Until check() is true (run in a thread unless `in_loop`: it reads what the event loop owns)."""
    deadline = time.monotonic() + timeout
    while not (check() if in_loop else await asyncio.to_thread(check)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(every)


# ------------------------------------------------------------------ counting the operator's requests


@dataclass(frozen=True)
class Seen:
    """One request the operator made: its RBAC verb (or `discovery`), resource[/subresource], path and, for
    writes, the start of its body (to tell what a write was)."""

    verb: str
    resource: str
    method: str
    path: str
    body: str = ""


_PREFIX = re.compile(r"^/(?:api/[^/]+|apis/[^/]+/[^/]+)(?:/|$)")


def classify(method: str, path: str, query: dict[str, str]) -> tuple[str, str]:
    """(verb, resource[/subresource]) of a Kubernetes API request, as RBAC names them; ('discovery', path) for
    /api, /apis, /version and group/version documents."""
    prefix = _PREFIX.match(path)
    parts = [part for part in path[prefix.end():].split("/") if part] if prefix else []
    if not parts:
        return "discovery", path
    if parts[0] == "namespaces" and len(parts) >= 3:
        parts = parts[2:]  # a namespaced resource: namespaces/<ns>/<plural>[/<name>[/<subresource>]]
    resource, named = parts[0], len(parts) >= 2
    if len(parts) >= 3:
        resource = f"{resource}/{parts[2]}"
    if method == "GET":
        verb = "watch" if query.get("watch") in ("true", "1") else "get" if named else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())
    return verb, resource


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length",
               "accept-encoding", "proxy-authorization", "proxy-connection"}


@dataclass
class CountingProxy:
    """A plain-HTTP proxy in front of `upstream` (an API server URL needing no authentication: kmock, or
    `kubectl proxy`) that records every request passing through it and streams the answers back (watches too)."""

    upstream: str
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        verb, resource = classify(request.method, request.path, dict(request.query))
        self.seen.append(Seen(verb, resource, request.method, request.path_qs,
                              body[:1000].decode(errors="replace") if verb in WRITES else ""))
        headers = {key: value for key, value in request.headers.items() if key.lower() not in _HOP_BY_HOP}
        assert self._session is not None
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=body or None, allow_redirects=False) as answer:
            response = web.StreamResponse(status=answer.status, reason=answer.reason, headers={
                key: value for key, value in answer.headers.items()
                if key.lower() not in _HOP_BY_HOP and key.lower() != "content-encoding"})
            await response.prepare(request)
            try:
                async for chunk in answer.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionError:  # the operator went away mid-answer (a watch, when it stops): nothing to tell
                pass
            return response

    @asynccontextmanager
    async def running(self) -> AsyncIterator[CountingProxy]:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as self._session:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._forward)
            runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self.url = f"http://127.0.0.1:{port}"
            try:
                yield self
            finally:
                await runner.cleanup()

    _session: aiohttp.ClientSession | None = None


# ------------------------------------------------------------------ API servers


class BenchEmulator(Emulator):
    """The handler tests' emulator made fast enough to measure the operator rather than itself (profiled with
    cProfile at 30 and 300 policies; kmock 0.8 offers no switch for any of this, so its internals are used):
    - no request history: kmock matches each request against every earlier one (each reaction's filter walks the
      whole history), so a request cost time proportional to all requests before it and 100 policies took minutes
      to get Ready; the benchmark counts requests in its proxy instead;
    - objects looked up by key: kmock compares every stored object with each GET (2 ms a request at 300 policies,
      growing with their number);
    - error answers without the emulator's own traceback (formatting it cost 2 ms per 404/409).
    When it lags, the operator's watch events come late, and kopf, after waiting
    settings.persistence.consistency_timeout for its own annotation patch, handles an older version again."""

    _by_key: dict[tuple[Any, ...], Any]
    _by_resource: dict[tuple[Any, ...], list[Any]]
    _indexed = 0

    def _index(self) -> None:
        stored: dict[Any, Any] = self._objects._objects  # insertion-ordered; kmock never removes a key
        if self._indexed == len(stored):
            return
        if not self._indexed:
            self._by_key, self._by_resource = {}, {}
        for key in list(stored)[self._indexed:]:
            resource, namespace, name = key
            kind = (resource.group, resource.version, resource.plural)
            self._by_key[(*kind, namespace, name)] = stored[key]
            self._by_resource.setdefault(kind, []).append((namespace, stored[key]))
        self._indexed = len(stored)

    def _KubernetesEmulator__get_objs(self, request: Any, strict: bool) -> list[Any]:  # noqa: N802 - kmock's name
        self._index()
        resource = request.resource
        kind = (resource.group, resource.version, resource.plural)
        if request.name is not None and (strict or request.namespace is not None):
            found = self._by_key.get((*kind, request.namespace, request.name))
            return [found] if found is not None else []
        if request.name is not None:  # a name in every namespace: rare, kmock's own scan
            return list(super()._KubernetesEmulator__get_objs(request, strict))  # type: ignore[misc]
        return [obj for namespace, obj in self._by_resource.get(kind, [])
                if (namespace == request.namespace if strict else request.namespace in (None, namespace))]

    async def _render_error(self, exc: Exception) -> web.StreamResponse:
        if not isinstance(exc, kmock.KubernetesError):
            return await super()._render_error(exc)
        return web.json_response({"apiVersion": "v1", "kind": "Status", "metadata": {}, "code": exc.status,
                                  "status": "Failure", "reason": exc.reason or type(exc).__name__,
                                  "message": exc.message or repr(exc), "details": exc.details or {}},
                                 status=exc.status)

    async def _handle(self, request: Any) -> Any:
        try:
            return await super()._handle(request)
        finally:
            # kmock 0.8 keeps the history in this list and offers no switch; only requests in flight stay.
            history: list[Any] = self._requests
            for position in range(len(history) - 1, -1, -1):
                if history[position] is request:
                    del history[position]
                    break


@asynccontextmanager
async def emulated_api() -> AsyncIterator[BenchEmulator]:
    """kmock in this process, with the resources the operator uses."""
    async with BenchEmulator() as emulator, kmock.Server(emulator):
        for resource, info in RESOURCES.items():
            emulator.resources[resource] = info
        yield emulator


def is_ready(policy: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (policy.get("status") or {}).get("conditions") or [])


def ready_in(emulator: BenchEmulator) -> Callable[[], int]:
    """How many policies are Ready, read from the emulator's memory (in its event loop): listing 1,000 policies
    over HTTP every poll cost the emulator more than the operator's own requests."""
    def count() -> int:
        stored: dict[Any, Any] = emulator.objects._objects
        return sum(1 for (resource, _namespace, _name), obj in list(stored.items())
                   if resource.plural == PLURAL and not obj.deleted and is_ready(obj.raw))
    return count


def check_cluster() -> str:
    """What --cluster needs, or Refused saying what is missing: a kubeconfig, kubectl, a reachable API server,
    the CRDs. Returns the kubectl to use."""
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if not all(Path(path).is_file() for path in kubeconfig.split(os.pathsep) if path):
        raise Refused(f"--cluster benchmarks the cluster of KUBECONFIG, and there is none ({kubeconfig} does not "
                      f"exist): point KUBECONFIG at a cluster where you may create a namespace, or run without "
                      f"--cluster to use the built-in emulator")
    kubectl = shutil.which("kubectl") or shutil.which("kubectl", path=str(ROOT / ".tools" / "bin"))
    if kubectl is None:
        raise Refused("--cluster needs kubectl (it reaches the API server through `kubectl proxy`): `make tools` "
                      "puts one in .tools/bin")
    probe = subprocess.run([kubectl, "get", "crd", f"{PLURAL}.{GROUP}", "-o", "name"],  # noqa: S603
                           capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:
        detail = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["no answer"]
        hint = "install them: kubectl apply -f crds/" if "NotFound" in detail[0] or "not found" in detail[0] else \
            "check that `kubectl get crd` works with this KUBECONFIG"
        raise Refused(f"--cluster: could not read CustomResourceDefinition {PLURAL}.{GROUP} ({detail[0]}); {hint}")
    return kubectl


@asynccontextmanager
async def kubectl_proxy(kubectl: str) -> AsyncIterator[str]:
    """`kubectl proxy` on a free local port; yields its URL."""
    port = free_port()
    process = subprocess.Popen([kubectl, "proxy", f"--port={port}", "--address=127.0.0.1"],  # noqa: S603
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: _answers(url), 30, "kubectl proxy to listen")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def client(url: str) -> Iterator[tuple[kubernetes.client.CoreV1Api, kubernetes.client.CustomObjectsApi]]:
    with kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url)) as api:
        yield kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)


# ------------------------------------------------------------------ one run


def start_operator(proxy_url: str, scratch: Path, namespace: str | None) -> tuple[subprocess.Popen[bytes], Any]:
    kubeconfig = scratch / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": {"server": proxy_url}}],
        "users": [{"name": "bench", "user": {}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}]}))
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "LEADER_ELECTION": "false", "METRICS_PORT": "0",
           "LOG_FORMAT": "json"}
    env.pop("POD_NAMESPACE", None)
    env.pop("WATCH_NAMESPACES", None)
    if namespace:
        env["WATCH_NAMESPACES"] = namespace
    log = open(scratch / "operator.log", "wb")  # noqa: SIM115 - closed by the caller
    operator = subprocess.Popen(  # noqa: S603 - our own entry point
        [str(Path(sys.executable).parent / "pgbackup-operator"), f"--liveness=http://127.0.0.1:{free_port()}/healthz"],
        env=env, stdout=log, stderr=log)
    return operator, log


async def run_one(count: int, upstream: str, namespace: str, idle_seconds: float, settle_seconds: float,
                  ready_timeout: float, cluster: bool, keep_log: Path | None = None,
                  ready: Callable[[], int] | None = None) -> Result:
    with client(upstream) as (core, custom), tempfile.TemporaryDirectory() as scratch:
        if cluster:
            await asyncio.to_thread(core.create_namespace, {"apiVersion": "v1", "kind": "Namespace",
                                                            "metadata": {"name": namespace}})
        try:
            for name, data in (("db-creds", {"username": "backup", "password": "bench"}),
                               ("s3-creds", {"accessKeyId": "a", "secretAccessKey": "b"})):
                await asyncio.to_thread(core.create_namespaced_secret, namespace, {
                    "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
                    "stringData": data})
            async with CountingProxy(upstream).running() as proxy:
                return await _measure(count, proxy, custom, namespace, Path(scratch), idle_seconds, settle_seconds,
                                      ready_timeout, cluster, keep_log, ready)
        finally:
            if cluster:
                await _delete_namespace(core, namespace)


async def _measure(count: int, proxy: CountingProxy, custom: kubernetes.client.CustomObjectsApi, namespace: str,
                   scratch: Path, idle_seconds: float, settle_seconds: float, ready_timeout: float,
                   cluster: bool, keep_log: Path | None, ready: Callable[[], int] | None) -> Result:
    operator, log = start_operator(proxy.url, scratch, namespace if cluster else None)
    try:
        proc = Process(operator.pid)
        started = time.monotonic()
        cpu_started = proc.cpu_seconds()
        for index in range(count):
            await asyncio.to_thread(custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                                    policy_body(index, namespace, cluster))

        def all_ready() -> bool:
            if operator.poll() is not None:
                raise RuntimeError(f"the operator exited with {operator.returncode}; its log: "
                                   f"{(scratch / 'operator.log').read_text()[-3000:]}")
            if ready is not None:
                return ready() == count
            items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
            return len(items) == count and all(is_ready(item) for item in items)

        await wait_for(all_ready, ready_timeout, f"{count} policies Ready", every=max(0.5, count / 500),
                       in_loop=ready is not None)
        ready_seconds = time.monotonic() - started
        print(f"{count} policies Ready after {ready_seconds:.1f}s", file=sys.stderr, flush=True)
        reconcile_cpu = (proc.cpu_seconds() - cpu_started) / ready_seconds * 100
        reconcile_peak = proc.memory_mib("VmHWM")

        await asyncio.sleep(settle_seconds)  # the last handlers' bookkeeping lands
        since, cpu_idle, idle_started = len(proxy.seen), proc.cpu_seconds(), time.monotonic()
        await asyncio.sleep(idle_seconds)
        elapsed = time.monotonic() - idle_started
        idle_cpu = (proc.cpu_seconds() - cpu_idle) / elapsed * 100
        idle_rss = proc.memory_mib("VmRSS")
        idle = [seen for seen in proxy.seen[since:] if seen.verb != "watch"]  # watches: long-lived streams
        per_minute = {verb: round(n * 60 / elapsed, 1) for verb, n in sorted(Counter(s.verb for s in idle).items())}
        detail = Counter(f"{seen.verb} {seen.resource}" for seen in idle)
        print(f"{count} policies, idle requests: {dict(detail)}", file=sys.stderr, flush=True)

        since = len(proxy.seen)
        for index in range(count):
            await asyncio.to_thread(custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                                    f"p{index:04d}", {"spec": spec(index, suspend=cluster)})
        await asyncio.sleep(settle_seconds)
        writes = [seen for seen in proxy.seen[since:] if seen.verb in WRITES]
        for seen in writes[:10]:
            print(f"write after the re-apply: {seen.method} {seen.path} {seen.body[:300]}", file=sys.stderr,
                  flush=True)
    finally:
        operator.terminate()
        try:
            operator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait()
        log.close()
        if keep_log is not None:
            shutil.copy(scratch / "operator.log", keep_log.with_name(f"{keep_log.name}.{count}"))
    total = sum(per_minute.values())
    return Result(count, round(ready_seconds, 1), round(reconcile_peak, 1), round(reconcile_cpu, 1),
                  round(idle_rss, 1), round(idle_cpu, 2), per_minute, round(total * 5 / count, 3), len(writes),
                  "cluster" if cluster else "kmock")


async def _delete_namespace(core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    started = time.monotonic()
    await asyncio.to_thread(core.delete_namespace, namespace)

    def gone() -> bool:
        try:
            core.read_namespace(namespace)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    try:
        await wait_for(gone, 600, f"namespace {namespace} to be deleted", every=2)
        print(f"namespace {namespace} deleted in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    except RuntimeError as error:
        print(f"{error}: delete it yourself (kubectl delete namespace {namespace})", file=sys.stderr, flush=True)


async def run(count: int, args: argparse.Namespace, kubectl: str | None) -> Result:
    if kubectl is None:
        async with emulated_api() as emulator:
            return await run_one(count, str(emulator.url).rstrip("/"), NAMESPACE, args.idle_seconds,
                                 args.settle_seconds, args.ready_timeout, cluster=False, keep_log=args.operator_log,
                                 ready=ready_in(emulator))
    async with kubectl_proxy(kubectl) as url:
        return await run_one(count, url, f"pgbackup-bench-{secrets.token_hex(3)}", args.idle_seconds,
                             args.settle_seconds, args.ready_timeout, cluster=True, keep_log=args.operator_log)


def table(results: list[Result]) -> str:
    rows = [("all Ready after (s)", [f"{r.ready_seconds:g}" for r in results]),
            ("peak RSS while reconciling (MiB)", [f"{r.reconcile_peak_rss_mib:g}" for r in results]),
            ("CPU while reconciling (% of a core)", [f"{r.reconcile_cpu_percent:g}" for r in results]),
            ("RSS at idle (MiB)", [f"{r.idle_rss_mib:g}" for r in results]),
            ("CPU at idle (% of a core)", [f"{r.idle_cpu_percent:g}" for r in results]),
            ("API requests per minute at idle", [", ".join(f"{v} {n:g}" for v, n in r.idle_requests_per_minute.items())
                                                 or "0" for r in results]),
            ("requests per policy per 5 min at idle", [f"{r.idle_requests_per_policy_per_5min:g}" for r in results]),
            ("writes after re-applying every policy unchanged", [str(r.reapply_writes) for r in results])]
    lines = ["| | " + " | ".join(f"{r.policies} policies ({r.api_server})" for r in results) + " |",
             "|---|" + "---:|" * len(results)]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--policies", type=int, action="append", help="N (repeat for several runs; default 100)")
    parser.add_argument("--cluster", action="store_true", help="use the cluster of KUBECONFIG (current context) "
                        "instead of the built-in emulator; creates and deletes a scratch namespace")
    parser.add_argument("--idle-seconds", type=float, default=120.0, help="length of the idle window")
    parser.add_argument("--settle-seconds", type=float, default=10.0, help="pause before the idle window and "
                        "after the re-apply")
    parser.add_argument("--ready-timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--operator-log", type=Path, help="keep the operator's log as PATH.<N>")
    args = parser.parse_args(argv)
    if any(count < 1 for count in args.policies or []):
        parser.error("--policies must be at least 1")
    try:
        kubectl = check_cluster() if args.cluster else None
    except Refused as refused:
        print(f"bench_scale: refusing to run: {refused}", file=sys.stderr)
        return USAGE
    results = []
    for count in args.policies or [100]:
        results.append(asyncio.run(run(count, args, kubectl)))
        print(json.dumps(asdict(results[-1])), file=sys.stderr, flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
