"""Operator configuration from the environment (the Helm chart sets these variables)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pgbackup import installed_version
from pgbackup.builders.pod import JobSettings
from pgbackup.builders.size_anomaly import DEFAULT_THRESHOLD as DEFAULT_SIZE_ANOMALY_THRESHOLD
from pgbackup.builders.wal_state import DEFAULT_LAG_THRESHOLD_SECONDS

DEFAULT_WAL_STATUS_URL_TEMPLATE = "http://{service}.{namespace}.svc:{port}/status"


def _default_image() -> str:
    return f"ghcr.io/pgbackup/pgbackup-operator:{installed_version()}"  # ':dev' from a never-installed tree


@dataclass(frozen=True)
class OperatorConfig:
    image: str
    """PGBACKUP_IMAGE: the image backup Jobs run (the operator's own image by default)."""
    job_service_account: str | None
    """PGBACKUP_JOB_SERVICE_ACCOUNT: ServiceAccount of backup Jobs unless a policy names its own."""
    namespaces: tuple[str, ...]
    """WATCH_NAMESPACES: comma-separated namespaces to watch; empty = all namespaces."""
    secret_retry_seconds: float
    """PGBACKUP_SECRET_RETRY_SECONDS: how soon a policy with a missing Secret is checked again."""
    log_format: str
    """LOG_FORMAT: 'json' for one JSON object per line, anything else for plain text."""
    objectives_interval_seconds: float = 60.0
    """PGBACKUP_OBJECTIVES_INTERVAL_SECONDS: how often ObjectivesMet is evaluated (the RPO grows with time)."""
    wal_status_interval_seconds: float = 30.0
    """PGBACKUP_WAL_STATUS_INTERVAL_SECONDS: how often each WAL streamer's state is read into status."""
    wal_lag_threshold_seconds: float = DEFAULT_LAG_THRESHOLD_SECONDS
    """PGBACKUP_WAL_LAG_THRESHOLD_SECONDS: WALArchiving turns False/Lagging above this archive lag."""
    wal_status_url_template: str = DEFAULT_WAL_STATUS_URL_TEMPLATE
    """PGBACKUP_WAL_STATUS_URL_TEMPLATE: where a streamer's state is read; {service}, {namespace}, {port} and
    {policy} are filled in (tests point it at a local server)."""
    metrics_port: int | None = None
    """METRICS_PORT: port of the Prometheus /metrics endpoint; 0 or unset = no endpoint (the chart sets it)."""
    metrics_address: str = "0.0.0.0"
    """METRICS_ADDRESS: address the metrics endpoint binds to."""
    size_anomaly_threshold: float = DEFAULT_SIZE_ANOMALY_THRESHOLD
    """PGBACKUP_SIZE_ANOMALY_THRESHOLD: SizeAnomaly turns True when the newest backup's size differs from the
    median of the previous ones by more than this fraction (0.5 = 50 %)."""
    recording_interval_seconds: float = 120.0
    """PGBACKUP_RECORDING_INTERVAL_SECONDS: how often finished Jobs that are not recorded yet (a missed event, a
    failed API call) are looked for and recorded."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OperatorConfig:
        return cls(
            image=env.get("PGBACKUP_IMAGE") or _default_image(),
            job_service_account=env.get("PGBACKUP_JOB_SERVICE_ACCOUNT") or None,
            namespaces=tuple(ns.strip() for ns in env.get("WATCH_NAMESPACES", "").split(",") if ns.strip()),
            secret_retry_seconds=float(env.get("PGBACKUP_SECRET_RETRY_SECONDS") or 30),
            log_format=(env.get("LOG_FORMAT") or "plain").lower(),
            objectives_interval_seconds=float(env.get("PGBACKUP_OBJECTIVES_INTERVAL_SECONDS") or 60),
            wal_status_interval_seconds=float(env.get("PGBACKUP_WAL_STATUS_INTERVAL_SECONDS") or 30),
            wal_lag_threshold_seconds=float(env.get("PGBACKUP_WAL_LAG_THRESHOLD_SECONDS")
                                            or DEFAULT_LAG_THRESHOLD_SECONDS),
            wal_status_url_template=env.get("PGBACKUP_WAL_STATUS_URL_TEMPLATE") or DEFAULT_WAL_STATUS_URL_TEMPLATE,
            metrics_port=int(env.get("METRICS_PORT") or 0) or None,
            metrics_address=env.get("METRICS_ADDRESS") or "0.0.0.0",
            size_anomaly_threshold=float(env.get("PGBACKUP_SIZE_ANOMALY_THRESHOLD") or DEFAULT_SIZE_ANOMALY_THRESHOLD),
            recording_interval_seconds=float(env.get("PGBACKUP_RECORDING_INTERVAL_SECONDS") or 120),
        )

    def job_settings(self) -> JobSettings:
        return JobSettings(image=self.image, service_account=self.job_service_account)


_current: OperatorConfig | None = None


def load() -> OperatorConfig:
    """Read the environment (once per operator start)."""
    global _current
    _current = OperatorConfig.from_env()
    return _current


def current() -> OperatorConfig:
    return _current or load()
