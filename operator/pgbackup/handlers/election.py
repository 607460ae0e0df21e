"""Leader election with a coordination.k8s.io Lease, so that of several replicas exactly one runs handlers.

A replica that cannot renew its lease within the lease duration stops the operator and exits non-zero;
Kubernetes restarts it and it queues up as a candidate again (the controller-runtime convention).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from collections.abc import Callable
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from pgbackup.handlers import kube

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str = "pgbackup-operator-leader"
    identity: str = ""
    lease_seconds: int = 15
    renew_every: float = 5.0


def _now() -> datetime:
    return datetime.now(UTC)


def _micro(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeaseElection:
    def __init__(self, lease: LeaseConfig) -> None:
        self.lease = lease
        self.api = kubernetes.client.CoordinationV1Api(kube.client())

    def try_acquire(self) -> bool:
        """Take or renew the Lease; False while another live replica holds it."""
        now = _now()
        try:
            current: dict[str, Any] = kube._json(self.api.read_namespaced_lease(
                self.lease.name, self.lease.namespace, _preload_content=False))
        except ApiException as error:
            if not kube.is_status(error, 404):
                raise
            return self._create(now)
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
        duration = timedelta(seconds=spec.get("leaseDurationSeconds") or self.lease.lease_seconds)
        if holder and holder != self.lease.identity and renewed and now - renewed < duration:
            return False
        if holder != self.lease.identity:
            spec["acquireTime"] = _micro(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.lease.identity, renewTime=_micro(now),
                    leaseDurationSeconds=self.lease.lease_seconds)
        current["spec"] = spec
        try:  # replace carries resourceVersion: if another replica wrote first, this fails with 409
            self.api.replace_namespaced_lease(self.lease.name, self.lease.namespace, current)
        except ApiException as error:
            if kube.is_status(error, 409):
                return False
            raise
        return True

    def _create(self, now: datetime) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.lease.name, "namespace": self.lease.namespace},
            "spec": {"holderIdentity": self.lease.identity, "leaseDurationSeconds": self.lease.lease_seconds,
                     "acquireTime": _micro(now), "renewTime": _micro(now), "leaseTransitions": 0},
        }
        try:
            self.api.create_namespaced_lease(self.lease.namespace, body)
        except ApiException as error:
            if kube.is_status(error, 409):
                return False
            raise
        return True

    def wait_until_leader(self, stop: threading.Event) -> bool:
        """Block until this replica leads (True) or `stop` is set (False)."""
        announced = False
        while not stop.is_set():
            try:
                if self.try_acquire():
                    logger.info(f"Leading as {self.lease.identity} (Lease {self.lease.namespace}/{self.lease.name}).")
                    return True
            except ApiException as error:
                logger.warning(f"Leader election: Lease {self.lease.namespace}/{self.lease.name}: {error.reason}")
            if not announced:
                logger.info(f"Standing by: another replica holds Lease {self.lease.namespace}/{self.lease.name}.")
                announced = True
            stop.wait(self.lease.renew_every)
        return False

    def keep_renewing(self, stop: threading.Event, lost: threading.Event, on_lost: Callable[[], None]) -> None:
        """Renew until `stop`; when the lease could not be renewed in time, set `lost` and call `on_lost`."""
        last_renewal = _now()
        while not stop.wait(self.lease.renew_every):
            try:
                if self.try_acquire():
                    last_renewal = _now()
                    continue
            except ApiException as error:
                logger.warning(f"Leader election: renewing Lease failed: {error.reason}")
            if _now() - last_renewal >= timedelta(seconds=self.lease.lease_seconds):
                logger.error("Leadership lost: stopping so that only one replica acts; the pod will restart.")
                lost.set()
                on_lost()
                return

    def release(self) -> None:
        """Hand the lease over at once on a clean shutdown instead of letting it expire."""
        try:
            current = kube._json(self.api.read_namespaced_lease(self.lease.name, self.lease.namespace,
                                                                _preload_content=False))
            if (current.get("spec") or {}).get("holderIdentity") == self.lease.identity:
                current["spec"]["holderIdentity"] = None
                self.api.replace_namespaced_lease(self.lease.name, self.lease.namespace, current)
        except ApiException as error:
            logger.warning(f"Leader election: could not release the Lease: {error.reason}")
