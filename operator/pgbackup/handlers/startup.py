"""Operator-wide kopf settings and login."""

from __future__ import annotations

from typing import Any

import kopf
import kubernetes.client

from pgbackup.builders.names import OWNED_SELECTOR
from pgbackup.handlers import config, kube

# Not "pgbackup.dev": kopf leaves every annotation under its storage prefix out of the diff it reacts to,
# which would hide pgbackup.dev/backup-now from the update handler.
STORAGE_PREFIX = "kopf.pgbackup.dev"
# kopf puts it on an object while a daemon, timer or deletion handler of that object needs it; on a
# RestoreRequest only while its spec.quiesce workloads are scaled down (handlers/quiesce.py).
FINALIZER = "pgbackup.dev/kopf-finalizer"


CONSISTENCY_TIMEOUT_SECONDS = 60.0


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    """Read the configuration; keep kopf's own bookkeeping in annotations so status stays schema-clean."""
    current = config.load()
    kube.reset()  # a fresh connection pool per operator run
    if current.log_format == "json":
        kopf.configure(log_format=kopf.LogFormat.JSON, log_refkey="object")
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=STORAGE_PREFIX)
    # kopf adds its finalizer only for daemons, timers and non-optional deletion handlers: on a RestoreRequest while
    # its workloads are scaled down (quiesce), never on a BackupPolicy (daemons.py); kopf also removes it from
    # policies that older versions finalized.
    settings.persistence.finalizer = FINALIZER
    # After patching its annotations kopf waits this long for the watch to deliver that version before it handles
    # an older one (without the annotations: the policy would look new and be reconciled again). kopf's 5 s was too
    # short with 300+ policies: a slow watch made every policy reconciled twice and kept the operator busy.
    settings.persistence.consistency_timeout = CONSISTENCY_TIMEOUT_SECONDS
    settings.posting.enabled = True
    settings.execution.max_workers = 4
    settings.watching.server_timeout = 300
    # Server-side: only the Jobs the operator made are listed and watched (handler label filters are
    # client-side, so without this every Job in the cluster would stream through the operator).
    settings.watching.label_selectors["batch", "v1", "jobs"] = OWNED_SELECTOR
    logger.info(f"pgbackup operator: backup image {current.image}, "
                f"namespaces {', '.join(current.namespaces) or 'all'}")


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The kubernetes client's credentials (in-cluster or kubeconfig), shared by kopf and the handlers."""
    explicit = kube.explicit_configuration()
    if explicit is not None:
        return _connection_info(explicit)
    info = kopf.login_via_client(**kwargs)
    kube.reset()  # the client library has just loaded (possibly refreshed) credentials
    return info


def _connection_info(configuration: kubernetes.client.Configuration) -> kopf.ConnectionInfo:
    header = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )
