"""The Kubernetes API rights the operator's code uses: the chart's ClusterRole is generated from this list
(`make crds`), and the handler tests check that every request the operator makes is covered by it.

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


OPERATOR_RULES: tuple[Rule, ...] = (
    Rule("pgbackup.dev", ("backuppolicies", "restorerequests"), ("get", "list", "watch", "patch"),
         "watch the custom resources; kopf patches its annotations"),
    Rule("pgbackup.dev", ("backuppolicies/status", "restorerequests/status"), ("get", "patch"),
         "status is written only through the status subresource"),
    Rule("batch", ("cronjobs",), ("get", "list", "watch", "create", "patch"), "the CronJob of each policy"),
    Rule("batch", ("jobs",), ("get", "list", "watch", "create", "patch"), "on-demand backups, restores; read back results"),
    Rule("", ("pods",), ("get", "list"), "read a finished Job's termination message and failure reason"),
    Rule("", ("secrets",), ("get",), "check that referenced Secrets and keys exist (values are never read into status)"),
    Rule("", ("events",), ("create",), "Events on the custom resources"),
    Rule("events.k8s.io", ("events",), ("create",), "Events on the custom resources (newer API)"),
    Rule("apiextensions.k8s.io", ("customresourcedefinitions",), ("get", "list", "watch"), "kopf discovers the CRDs"),
    Rule("", ("namespaces",), ("get", "list", "watch"), "kopf watches all namespaces in cluster-wide mode"),
    Rule("coordination.k8s.io", ("leases",), ("get", "create", "update"), "leader election between replicas"),
)
