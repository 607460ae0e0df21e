"""Leader election with a coordination.k8s.io Lease, so that of several replicas exactly one runs handlers.

Timings and semantics are client-go's (k8s.io/client-go/tools/leaderelection), which controller-runtime uses:

- lease duration 15 s: a follower takes the Lease over only when it has seen the Lease record unchanged for
  that long, measured on its own monotonic clock from when it saw the last change (never by comparing the
  holder's `renewTime` with its own wall clock, so clock skew between nodes cannot cut a lease short);
- renew deadline 10 s: the leader gives up when it has not renewed within 10 s of starting its last successful
  renewal, well before any follower can regard the Lease as expired (15 s after it saw that renewal);
- retry period 2 s between attempts, by followers and the leader alike;
- every write is a replace carrying the `resourceVersion` that was read: of two candidates racing for the same
  Lease, the API server accepts one write and answers the other with 409 Conflict; the loser stays a follower.

A leader that loses the Lease (renew deadline passed, or the Lease names another holder) exits the process at
once with `os._exit` after logging why: a graceful shutdown would wait for running handlers, and a synchronous
handler can block for minutes while another replica already leads. Kubernetes restarts the container and it
queues up as a follower again.

Why not the kubernetes client's `kubernetes.leaderelection` (checked with kubernetes 36.0.3): it implements
client-go's algorithm, but ships only a ConfigMap lock (no Lease lock), builds its API client from the global
default configuration, calls `sys.exit` from its config validation, cannot be stopped while it waits to lead
(no way to answer SIGTERM cleanly as a follower), accepts only whole-second retry periods, and sets no request
timeouts, so a renewal that hangs on a half-open connection would hold a deposed leader past its deadline.
Its loss report (an `onstopped_leading` callback after `renew_loop` returns) is what `keep_leading` does here.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import kubernetes.client
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from pgbackup.handlers import kube

logger = logging.getLogger(__name__)

LEASE_DURATION = 15
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
EXIT_LEADERSHIP_LOST = 1

# What a Lease request can fail with besides an API error: refused or reset connections, timeouts.
TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str = "pgbackup-operator-leader"
    identity: str = ""
    lease_duration: int = LEASE_DURATION
    renew_deadline: float = RENEW_DEADLINE
    retry_period: float = RETRY_PERIOD

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError(f"Lease {self.namespace}/{self.name}: the candidate needs an identity "
                             f"(POD_NAME or the host name)")
        if not self.lease_duration > self.renew_deadline > 1.2 * self.retry_period > 0:
            raise ValueError(f"Lease {self.namespace}/{self.name}: need lease duration > renew deadline > "
                             f"1.2 x retry period > 0 (client-go's rule), got {self.lease_duration} s, "
                             f"{self.renew_deadline} s, {self.retry_period} s")


def _micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _read_json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


def describe(error: BaseException) -> str:
    """A short account of a failed Lease request, without response bodies."""
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"


def exit_at_once(reason: str) -> NoReturn:
    """Log why, flush the logs, and end the process without running handlers' cleanup or waiting for threads."""
    logger.critical(f"Leadership lost: {reason}. Exiting at once (code {EXIT_LEADERSHIP_LOST}) so that this "
                    f"replica stops acting; Kubernetes restarts it as a follower.")
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            handler.flush()
        current = current.parent
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_LEADERSHIP_LOST)


def lease_api(configuration: kubernetes.client.Configuration | None = None) -> kubernetes.client.CoordinationV1Api:
    """Lease calls through a client of their own, like the handlers' (kube.client()) but without urllib3's
    retries: three silent retries of a hung request would outlast the renew deadline."""
    shared = kube.client()
    own = copy.copy(configuration or shared.configuration)
    own.retries = False
    client = kubernetes.client.ApiClient(own)
    client.default_headers.update(shared.default_headers)  # User-Agent and any extra headers
    return kubernetes.client.CoordinationV1Api(client)


class LeaseElection:
    """One candidate. `wait_until_leader` blocks while following; `keep_leading` renews and reports loss."""

    def __init__(self, lease: LeaseConfig, api: kubernetes.client.CoordinationV1Api | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lease = lease
        self.api = api or lease_api()
        self.clock = clock
        self.holder: str | None = None  # as last read from the Lease
        self._observed: dict[str, Any] | None = None  # the Lease spec as last seen ...
        self._observed_at = 0.0  # ... and when it was first seen so (self.clock)
        self._renew_started_at: float | None = None  # start of the last successful write by this candidate

    @property
    def where(self) -> str:
        return f"Lease {self.lease.namespace}/{self.lease.name}"

    def _observe(self, spec: dict[str, Any]) -> None:
        if spec != self._observed:
            self._observed, self._observed_at = dict(spec), self.clock()
        self.holder = spec.get("holderIdentity") or None

    def try_acquire_or_renew(self, timeout: float | None = None) -> bool:
        """One attempt to take or renew the Lease: False while another candidate holds it (or won the race for
        it with a 409 Conflict). API and connection errors propagate; each request gives up after `timeout`."""
        started = self.clock()
        request_timeout = timeout if timeout is not None else self.lease.renew_deadline
        try:
            current = _read_json(self.api.read_namespaced_lease(
                self.lease.name, self.lease.namespace, _preload_content=False, _request_timeout=request_timeout))
        except ApiException as error:
            if error.status != 404:
                raise
            return self._create(started, request_timeout)
        spec: dict[str, Any] = dict(current.get("spec") or {})
        self._observe(spec)
        duration = float(spec.get("leaseDurationSeconds") or self.lease.lease_duration)
        if self.holder and self.holder != self.lease.identity and self.clock() < self._observed_at + duration:
            return False
        now = _micro_time(datetime.now(UTC))
        if self.holder != self.lease.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.lease.identity, renewTime=now,
                    leaseDurationSeconds=self.lease.lease_duration)
        current["spec"] = spec  # metadata keeps the resourceVersion that was read: the write's precondition
        try:
            written = _read_json(self.api.replace_namespaced_lease(
                self.lease.name, self.lease.namespace, current, _preload_content=False,
                _request_timeout=request_timeout))
        except ApiException as error:
            if error.status == 409:
                logger.info(f"{self.where} changed while {self.lease.identity} was writing it (409 Conflict): "
                            f"another candidate got there first")
                return False
            raise
        self._observe(dict(written.get("spec") or spec))
        self._renew_started_at = started
        return True

    def _create(self, started: float, request_timeout: float) -> bool:
        now = _micro_time(datetime.now(UTC))
        spec = {"holderIdentity": self.lease.identity, "leaseDurationSeconds": self.lease.lease_duration,
                "acquireTime": now, "renewTime": now, "leaseTransitions": 0}
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.lease.name, "namespace": self.lease.namespace}, "spec": spec}
        try:
            self.api.create_namespaced_lease(self.lease.namespace, body, _preload_content=False,
                                             _request_timeout=request_timeout)
        except ApiException as error:
            if error.status == 409:
                return False  # another candidate created it first
            raise
        self._observe(spec)
        self._renew_started_at = started
        return True

    def wait_until_leader(self, stop: threading.Event) -> bool:
        """Block until this replica leads (True) or `stop` is set (False)."""
        announced: str | None = None
        while not stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    logger.info(f"Leading as {self.lease.identity} ({self.where}).")
                    return True
                if self.holder != announced:
                    logger.info(f"Standing by: {self.holder or 'another replica'} holds {self.where}; taking over "
                                f"when it has not been renewed for {self.lease.lease_duration} s.")
                    announced = self.holder
            except (ApiException, *TRANSPORT_ERRORS) as error:
                logger.warning(f"Leader election: {self.where}: {describe(error)}; retrying.")
            stop.wait(self.lease.retry_period)
        return False

    def keep_leading(self, stop: threading.Event, on_lost: Callable[[str], None] = exit_at_once) -> None:
        """Renew every retry period until `stop`. Call `on_lost(reason)` and return as soon as the Lease names
        another holder, or when no renewal succeeded within the renew deadline (each request is cut off at that
        deadline, so a hung connection cannot hold a deposed leader past it)."""
        if self._renew_started_at is None:
            raise RuntimeError(f"{self.lease.identity} does not hold {self.where}: call wait_until_leader first")
        wait, trouble = self.lease.retry_period, "no answer"
        while not stop.wait(wait):
            remaining = self._renew_started_at + self.lease.renew_deadline - self.clock()
            if remaining <= 0:
                on_lost(f"{self.where} was not renewed within the renew deadline of {self.lease.renew_deadline:g} s "
                        f"(last attempt: {trouble}); another replica may take over "
                        f"{self.lease.lease_duration} s after the last renewal")
                return
            try:
                if self.try_acquire_or_renew(timeout=remaining):
                    wait = self.lease.retry_period
                    continue
                trouble = f"held by {self.holder}" if self.holder else "409 Conflict"
            except (ApiException, *TRANSPORT_ERRORS) as error:
                trouble = describe(error)
                logger.warning(f"Leader election: renewing {self.where} failed: {trouble}; retrying.")
            if self.holder and self.holder != self.lease.identity:
                on_lost(f"{self.where} is now held by {self.holder}")
                return
            remaining = self._renew_started_at + self.lease.renew_deadline - self.clock()
            wait = max(0.0, min(self.lease.retry_period, remaining))

    def release(self) -> None:
        """On a clean shutdown, hand the Lease over at once instead of letting it expire (client-go's
        ReleaseOnCancel): empty holder, so that a follower takes it on its next attempt."""
        try:
            current = _read_json(self.api.read_namespaced_lease(
                self.lease.name, self.lease.namespace, _preload_content=False,
                _request_timeout=self.lease.renew_deadline))
            spec = current.get("spec") or {}
            if spec.get("holderIdentity") != self.lease.identity:
                return
            current["spec"] = {**spec, "holderIdentity": None, "leaseDurationSeconds": 1,
                               "renewTime": _micro_time(datetime.now(UTC))}
            self.api.replace_namespaced_lease(self.lease.name, self.lease.namespace, current,
                                              _preload_content=False, _request_timeout=self.lease.renew_deadline)
            logger.info(f"Released {self.where}.")
        except (ApiException, *TRANSPORT_ERRORS) as error:
            logger.warning(f"Leader election: could not release {self.where} ({describe(error)}); "
                           f"another replica takes over when it expires.")
