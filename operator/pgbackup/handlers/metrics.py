"""Prometheus metrics on METRICS_PORT: gauges computed on each scrape from the latest BackupPolicy and
RestoreRequest bodies the watch stream delivered, plus a counter of handler failures.

The index is emptied when the operator starts and refilled by kopf's initial listing, so after a restart
every gauge comes back from status rather than from zero. The runner pushes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import WSGIServer

import kopf
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pgbackup.api.base import GROUP
from pgbackup.builders.metrics import (
    POLICY_GAUGES,
    POLICY_LABELS,
    RESTORE_LABELS,
    RESTORE_REQUESTS,
    RESTORE_REQUESTS_HELP,
    policy_samples,
    restore_request_samples,
)
from pgbackup.handlers import config, kube, remembered

policies, restore_requests = remembered.policies, remembered.restore_requests


class StatusCollector(Collector):
    """Builds every gauge from the index on each scrape (series vanish with their object)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {name: GaugeMetricFamily(name, help, labels=list(POLICY_LABELS))
                    for name, help in POLICY_GAUGES.items()}
        for sample in policy_samples(policies.bodies(), datetime.now(UTC)):
            families[sample.name].add_metric([sample.labels[label] for label in POLICY_LABELS], sample.value)
        restores = GaugeMetricFamily(RESTORE_REQUESTS, RESTORE_REQUESTS_HELP, labels=list(RESTORE_LABELS))
        for sample in restore_request_samples(restore_requests.bodies()):
            restores.add_metric([sample.labels[label] for label in RESTORE_LABELS], sample.value)
        yield from families.values()
        yield restores


REGISTRY = CollectorRegistry()
REGISTRY.register(StatusCollector())
RECONCILE_ERRORS = Counter("pgbackup_reconcile_errors", "Handler failures (exceptions in kopf handlers)",
                           labelnames=["kind"], registry=REGISTRY)
for _kind in ("BackupPolicy", "RestoreRequest", "Job"):
    RECONCILE_ERRORS.labels(kind=_kind)  # exported as 0 from the start, so increase() sees the first failure


class _HandlerFailures(logging.Handler):
    """Counts kopf's own "<handler> failed ..." error records, which carry the object's kind: one place that
    sees every handler failure, without an except clause in each handler."""

    def emit(self, record: logging.LogRecord) -> None:
        ref = getattr(record, "k8s_ref", None)
        if record.levelno >= logging.ERROR and isinstance(ref, dict) and " failed" in record.getMessage():
            RECONCILE_ERRORS.labels(kind=str(ref.get("kind") or "unknown")).inc()


_failures = _HandlerFailures()
logging.getLogger("kopf.objects").addHandler(_failures)

_server: WSGIServer | None = None
_thread: threading.Thread | None = None


@kopf.on.event(GROUP, kube.POLICIES)
async def index_policy(type: str | None, body: kopf.Body, **_: Any) -> None:
    policies.apply(type, body)


@kopf.on.event(GROUP, kube.RESTORES)
async def index_restore_request(type: str | None, body: kopf.Body, **_: Any) -> None:
    restore_requests.apply(type, body)


@kopf.on.startup()
def serve_metrics(logger: kopf.Logger, **_: Any) -> None:
    """Start the /metrics endpoint on METRICS_PORT (off when it is 0 or unset)."""
    global _server, _thread
    policies.clear()
    restore_requests.clear()
    settings = config.load()  # not current(): this may run before the configure() startup handler
    if not settings.metrics_port:
        logger.info("metrics endpoint off (METRICS_PORT is 0 or unset)")
        return
    try:
        _server, _thread = start_http_server(settings.metrics_port, addr=settings.metrics_address, registry=REGISTRY)
    except OSError as error:
        # Backups matter more than their metrics: keep running, say loudly what is missing and why.
        logger.error(f"metrics endpoint not started: cannot listen on {settings.metrics_address}:"
                     f"{settings.metrics_port} ({error}); backups go on without /metrics. Free the port or set "
                     f"METRICS_PORT (chart: metrics.port) to another one, then restart the operator.")
        return
    logger.info(f"metrics on http://{settings.metrics_address}:{settings.metrics_port}/metrics")


@kopf.on.cleanup()
def stop_metrics(**_: Any) -> None:
    global _server, _thread
    if _server is not None:
        _server.shutdown()
        _server.server_close()
    if _thread is not None:
        _thread.join(timeout=5)
    _server = _thread = None
