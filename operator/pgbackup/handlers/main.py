"""`pgbackup-operator`: the kopf operator with Lease-based leader election and a liveness endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any
from urllib.parse import urlparse

import kopf
import kubernetes.config

import pgbackup.handlers.jobs  # noqa: F401  (registers handlers)
import pgbackup.handlers.memory  # noqa: F401
import pgbackup.handlers.metrics  # noqa: F401
import pgbackup.handlers.policy  # noqa: F401
import pgbackup.handlers.recording  # noqa: F401
import pgbackup.handlers.restore  # noqa: F401
import pgbackup.handlers.startup  # noqa: F401
import pgbackup.handlers.objectives  # noqa: F401
import pgbackup.handlers.verification  # noqa: F401
import pgbackup.handlers.wal  # noqa: F401
from pgbackup import installed_version
from pgbackup.handlers import config, kube
from pgbackup.handlers.election import LeaseConfig, LeaseElection

LIVENESS_ENDPOINT = "http://0.0.0.0:8080/healthz"
EXIT_USAGE = 3
logger = logging.getLogger("pgbackup.operator")


def _load_client_config() -> bool:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        try:
            kubernetes.config.load_kube_config()
        except kubernetes.config.ConfigException as error:
            logger.error(f"No Kubernetes credentials: not running in a cluster and no usable kubeconfig ({error}). "
                         f"Set KUBECONFIG or run the operator in a pod with a ServiceAccount.")
            return False
    kube.reset()
    return True


class _Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"standby\n")

    def log_message(self, *_: Any) -> None:
        pass


def _standby_health_server(endpoint: str) -> http.server.ThreadingHTTPServer:
    """Answer liveness probes while waiting for leadership (kopf serves the endpoint once it runs)."""
    url = urlparse(endpoint)
    server = http.server.ThreadingHTTPServer((url.hostname or "0.0.0.0", url.port or 8080), _Healthy)
    threading.Thread(target=server.serve_forever, daemon=True, name="standby-health").start()
    return server


async def _operate(stop: threading.Event, *, clusterwide: bool, namespaces: list[str], liveness_endpoint: str) -> None:
    """kopf.run, with a SIGTERM/SIGINT that arrives before kopf installs its own signal handlers (or while standing
    by) stopping it too, instead of being lost in `stop` while kopf runs on."""
    loop = asyncio.get_running_loop()
    stop_flag = asyncio.Event()

    def on_signal(*_: Any) -> None:
        stop.set()
        loop.call_soon_threadsafe(stop_flag.set)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if stop.is_set():
        return
    await kopf.operator(standalone=True,  # no kopf peering: the Lease decides who acts
                        clusterwide=clusterwide, namespaces=namespaces, liveness_endpoint=liveness_endpoint,
                        stop_flag=stop_flag)


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT. Leader election is on when POD_NAMESPACE is set (the chart sets it)."""
    args = argv if argv is not None else sys.argv[1:]
    if "--version" in args:
        print(f"pgbackup-operator {installed_version()}")
        return 0
    liveness = next((a.split("=", 1)[1] for a in args if a.startswith("--liveness=")), LIVENESS_ENDPOINT)
    settings = config.load()
    kopf.configure(log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
                   log_refkey="object")
    if not _load_client_config():
        return EXIT_USAGE

    stop = threading.Event()  # SIGTERM while standing by; kopf handles signals itself once it runs
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    election: LeaseElection | None = None
    renewer: threading.Thread | None = None
    pod_namespace = os.environ.get("POD_NAMESPACE")
    if pod_namespace and os.environ.get("LEADER_ELECTION", "true").lower() != "false":
        identity = os.environ.get("POD_NAME") or socket.gethostname()
        election = LeaseElection(LeaseConfig(namespace=pod_namespace, identity=identity))
        health = _standby_health_server(liveness)
        try:
            if not election.wait_until_leader(stop):
                return 0
        finally:
            health.shutdown()
            health.server_close()
        # On a lost lease the renewer ends the process at once (election.exit_at_once): no graceful shutdown,
        # which would wait for handlers that may block for minutes while another replica already leads.
        renewer = threading.Thread(target=election.keep_leading, args=(stop,), daemon=True, name="lease")
        renewer.start()
    else:
        logger.warning("Leader election is off (POD_NAMESPACE unset or LEADER_ELECTION=false): run one replica only.")

    try:
        with contextlib.suppress(asyncio.CancelledError):  # as kopf.run
            asyncio.run(_operate(stop, clusterwide=not settings.namespaces, namespaces=list(settings.namespaces),
                                 liveness_endpoint=liveness))
    finally:
        stop.set()
        if election is not None and renewer is not None:
            renewer.join(timeout=election.lease.renew_deadline)  # no renewal in flight that could undo the release
            election.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
