"""The Kubernetes API rights the operator's code uses: the chart's ClusterRole is generated from this list
(`make crds`), and the handler tests (tests/handlers/test_rbac.py) check that every request the operator
makes is covered by it and that it grants nothing the operator does not use.

Each rule says why it is needed; remove a rule when the code stops making that call.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str
    optional: str | None = None
    """A chart values flag (`<optional>.enabled`): the rule is granted only where the chart enables it."""


OPERATOR_RULES: tuple[Rule, ...] = (
    Rule("pgbackup.dev", ("backuppolicies", "restorerequests"), ("get", "list", "watch", "patch"),
         "watch the custom resources; kopf keeps its progress in their annotations (kopf.pgbackup.dev/*)"),
    Rule("pgbackup.dev", ("backuppolicies/status", "restorerequests/status"), ("patch",),
         "status is written only through the status subresource"),
    Rule("batch", ("cronjobs",), ("get", "list", "create", "patch", "delete"),
         "the CronJobs of each policy: read to skip unchanged ones, server-side apply, create; delete the "
         "verification CronJob when verify.schedule is emptied (ownership GC only acts when the policy goes); "
         "list the backup CronJobs' last runs to find runs whose Job went before it was recorded"),
    Rule("batch", ("jobs",), ("list", "watch", "create", "patch"),
         "on-demand backups, restores, verification and catalog-sync Jobs; read back finished Jobs (also "
         "periodically, those not recorded yet) and mark them recorded"),
    Rule("apps", ("deployments",), ("get", "create", "patch", "delete"),
         "the WAL streamer Deployment of each policy with spec.wal.enabled: read to skip unchanged ones, "
         "server-side apply, create; delete it when spec.wal.enabled is turned off"),
    Rule("", ("services",), ("get", "create", "patch", "delete"),
         "the Service through which the operator reads a WAL streamer's state; deleted with the Deployment"),
    Rule("", ("pods",), ("list",), "read a finished Job's termination message and failure reason"),
    Rule("", ("pods/log",), ("get",), "the tail of a failed hook Job's log, for the RestoreRequest's message"),
    Rule("", ("secrets",), ("get",), "check that referenced Secrets and keys exist (values are never read into status)"),
    Rule("", ("events",), ("create",), "Events on the custom resources (kopf posts core/v1 Events)"),
    Rule("", ("namespaces",), ("get", "list", "watch"), "kopf follows the namespaces listed in WATCH_NAMESPACES"),
    Rule("apiextensions.k8s.io", ("customresourcedefinitions",), ("list", "watch"), "kopf discovers the CRDs"),
    Rule("coordination.k8s.io", ("leases",), ("get", "create", "update"),
         "leader election between replicas (handlers/election.py; namespaced to the operator's namespace)"),
    Rule("apps", ("deployments/scale", "statefulsets/scale"), ("get", "patch"),
         "RestoreRequest spec.quiesce: read replica counts, scale to zero and back (chart: restoreQuiesce.enabled)",
         optional="restoreQuiesce"),
)
