"""`kubectl pgbackup`: a thin command line over the pgbackup.dev API, through the `kubernetes` client.

kubectl's global flags (-n/--namespace, -A/--all-namespaces, --context, --kubeconfig, -o/--output) are taken
anywhere on the line, before or after the command. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

import kubernetes.client
import kubernetes.config
import yaml
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from pgbackup import installed_version

from pgbackup.api.base import GROUP, VERSION
from pgbackup.api.restore import RestoreRequestSpec
from pgbackup.builders.cronjob import ANNOTATION_BACKUP_NOW
from pgbackup.builders.names import LABEL_POLICY, backup_now_job_name, cronjob_name, label_value
from pgbackup.plugin import render

OK, FAILED, TIMEOUT, ERROR = 0, 1, 2, 3
POLICIES, RESTORES = "backuppolicies", "restorerequests"
MERGE_PATCH = "application/merge-patch+json"
IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
EXIT_CODES = """Exit codes:
  0  success
  1  a policy needs attention (status), or the backup / restore failed
  2  timed out waiting (--wait --timeout)
  3  usage error, or the object / cluster could not be reached"""


class UsageError(Exception):
    """Bad arguments, a missing object or an unreachable cluster: exit code 3."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message}")


# ------------------------------------------------------------------ connection


class Api:
    """The calls the plugin makes, on one ApiClient, returning plain wire dicts."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.batch = kubernetes.client.BatchV1Api(client)

    def policies(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            found = self.custom.list_cluster_custom_object(GROUP, VERSION, POLICIES)
        else:
            found = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, POLICIES)
        items: list[dict[str, Any]] = found.get("items") or []
        return sorted(items, key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"]))

    def policy(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, POLICIES, name)
        except ApiException as error:
            if error.status == 404:
                raise UsageError(f"BackupPolicy {name!r} not found in namespace {namespace!r}: list them with "
                                 f"`kubectl get backuppolicies -n {namespace}` or pass -n NAMESPACE") from None
            raise
        return found

    def annotate_policy(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        # metadata only: the spec (and so metadata.generation) stays exactly as the user applied it
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, POLICIES, name,
                                                   {"metadata": {"annotations": annotations}},
                                                   _content_type=MERGE_PATCH)

    def jobs(self, namespace: str, policy: str) -> list[dict[str, Any]]:
        response = self.batch.list_namespaced_job(namespace, label_selector=f"{LABEL_POLICY}={label_value(policy)}",
                                                  _preload_content=False)
        items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return items

    def create_restore(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """The created object as the server answered (with uid, creationTimestamp); the body sent when the answer
        was empty."""
        created: dict[str, Any] | None = self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                                     RESTORES, body)
        return created or body

    def restore(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, RESTORES, name)
        return found


def connect(kubeconfig: str | None, context: str | None) -> tuple[kubernetes.client.ApiClient, str]:
    """An ApiClient and the default namespace: from the kubeconfig (KUBECONFIG, ~/.kube/config or --kubeconfig)
    and its current or given context, else from the pod's service account when running in a cluster."""
    try:
        client = kubernetes.config.new_client_from_config(config_file=kubeconfig, context=context)
        contexts, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        return client, (chosen or {}).get("context", {}).get("namespace") or "default"
    except kubernetes.config.ConfigException as error:
        if kubeconfig or context or "KUBERNETES_SERVICE_HOST" not in os.environ:
            raise UsageError(f"cannot load the kubeconfig: {error}; pass --kubeconfig or set KUBECONFIG") from None
    kubernetes.config.load_incluster_config()
    with open(IN_CLUSTER_NAMESPACE) as file:
        namespace = file.read().strip()
    return kubernetes.client.ApiClient(), namespace


# ------------------------------------------------------------------ commands


class Context:
    def __init__(self, api: Api, namespace: str, out: TextIO, err: TextIO, poll: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api, self.namespace, self.out, self.err, self.poll, self.clock = api, namespace, out, err, poll, clock

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def progress(self, text: str) -> None:
        print(text, file=self.err, flush=True)


def dump(value: Any, output: str) -> str:
    """-o json or -o yaml."""
    if output == "yaml":
        return yaml.safe_dump(value, sort_keys=False).rstrip("\n")
    return json.dumps(value, indent=2)


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    namespace = None if args.all_namespaces else ctx.namespace
    policies = ctx.api.policies(namespace)
    now = datetime.now(UTC)
    rows = [render.policy_row(policy, now) for policy in policies]
    if args.output in ("json", "yaml"):
        ctx.say(dump(rows, args.output))
    elif not policies:
        ctx.progress(f"No BackupPolicies found{'' if namespace is None else f' in namespace {namespace}'}.")
    else:
        ctx.say(render.status_screen(policies, now, all_namespaces=args.all_namespaces, wide=args.output == "wide"))
    return FAILED if any(row["problems"] for row in rows) else OK


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    policy = ctx.api.policy(ctx.namespace, args.policy)
    if args.output in ("json", "yaml"):
        ctx.say(dump((policy.get("status") or {}).get("backups") or [], args.output))
    else:
        ctx.say(render.catalog(policy, wide=args.output == "wide"))
    return OK


def _finished(job: dict[str, Any]) -> str | None:
    """'Complete' or 'Failed' once the Job controller says so."""
    for item in (job.get("status") or {}).get("conditions") or []:
        if item.get("type") in ("Complete", "Failed") and item.get("status") == "True":
            return str(item["type"])
    return None


def cmd_backup(ctx: Context, args: argparse.Namespace) -> int:
    policy = ctx.api.policy(ctx.namespace, args.policy)
    value = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ctx.api.annotate_policy(ctx.namespace, args.policy, {ANNOTATION_BACKUP_NOW: value})
    ctx.progress(f"Requested a backup of BackupPolicy {ctx.namespace}/{args.policy} ({ANNOTATION_BACKUP_NOW}={value})")
    if not args.wait:
        return OK
    cronjob = (policy.get("status") or {}).get("cronJobName") or cronjob_name(args.policy)
    expected = backup_now_job_name(cronjob, value)
    deadline = ctx.clock() + args.timeout
    job_name: str | None = None
    outcome: str | None = None
    while ctx.clock() < deadline:
        jobs = [job for job in ctx.api.jobs(ctx.namespace, args.policy)
                if (job["metadata"].get("annotations") or {}).get(ANNOTATION_BACKUP_NOW) == value]
        if jobs and job_name is None:
            job_name = jobs[0]["metadata"]["name"]
            ctx.progress(f"Job {job_name} started; waiting for it to finish")
        outcome = _finished(jobs[0]) if jobs else None
        last = (ctx.api.policy(ctx.namespace, args.policy).get("status") or {}).get("lastBackup") or {}
        recorded = last.get("jobName") in {job_name or expected, expected}
        if recorded:
            # the operator read the Job's result into the status: that is the answer, even if the Job is gone
            ctx.say(dump(last, args.output) if args.output in ("json", "yaml") else render.last_backup(last))
            return OK if last.get("phase") == "Completed" else FAILED
        if outcome is not None:
            ctx.progress(f"Job {job_name} {outcome}; waiting for the operator to record the result")
        time.sleep(ctx.poll)
    if job_name is None:
        ctx.progress(f"Timed out after {args.timeout:g}s: no backup Job appeared for {args.policy}. Check that the "
                     f"operator runs and the policy is Ready: `kubectl describe backuppolicy {args.policy} "
                     f"-n {ctx.namespace}`")
    else:
        state = f"finished ({outcome})" if outcome else "still running"
        ctx.progress(f"Timed out after {args.timeout:g}s: Job {job_name} is {state}; see "
                     f"`kubectl logs job/{job_name} -n {ctx.namespace}`")
    return TIMEOUT


def restore_body(args: argparse.Namespace) -> dict[str, Any]:
    """The RestoreRequest for the command line, checked against the API model before it is sent."""
    spec: dict[str, Any] = {"policyRef": {"name": args.policy}, "backup": args.backup}
    if args.to_time:
        spec["pointInTime"] = {"targetTime": args.to_time}
    if args.target_database:
        spec["target"] = {"database": args.target_database}
    if args.dry_run:
        spec["dryRun"] = True
    if args.no_owner:
        spec["noOwner"] = True
    if args.no_privileges:
        spec["noPrivileges"] = True
    try:
        RestoreRequestSpec.model_validate(spec)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise UsageError(f"invalid restore: {problems}") from None
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RestoreRequest",
            "metadata": {"name": restore_name(args.policy, datetime.now(UTC)),
                         "labels": {LABEL_POLICY: label_value(args.policy)}},
            "spec": spec}


def restore_name(policy: str, now: datetime) -> str:
    """'<policy>-restore-20261123-161000-k3x9q': readable, sortable by time, unique by its random suffix
    (chosen here rather than by generateName, so that the name is known even from a terse server answer)."""
    suffix = "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
    return f"{policy[:200].rstrip('-.')}-restore-{now:%Y%m%d-%H%M%S}-{suffix}"


def cmd_restore(ctx: Context, args: argparse.Namespace) -> int:
    ctx.api.policy(ctx.namespace, args.policy)  # a clear error for a typo, before anything is created
    body = restore_body(args)
    created = ctx.api.create_restore(ctx.namespace, body)
    name = body["metadata"]["name"]
    structured = args.output in ("json", "yaml")
    if args.output == "name":
        ctx.say(f"restorerequest.pgbackup.dev/{name}")
    elif not structured:
        ctx.say(f"restorerequest.pgbackup.dev/{name} created")
    if not args.wait:
        if structured:
            ctx.say(dump(created, args.output))
        return OK
    deadline = ctx.clock() + args.timeout
    phase, plan_shown = None, False
    while ctx.clock() < deadline:
        restore = ctx.api.restore(ctx.namespace, name)
        status = restore.get("status") or {}
        if status.get("phase") != phase:
            phase = status.get("phase")
            ctx.progress(f"{name}: {phase or 'Pending'}")
        if status.get("plan") and not plan_shown:
            (ctx.progress if args.output else ctx.say)(render.restore_plan(status["plan"]))
            plan_shown = True
        if phase in ("Succeeded", "Failed"):
            if structured:
                ctx.say(dump(restore, args.output))
            else:
                (ctx.progress if args.output else ctx.say)(render.restore_outcome(restore))
            return OK if phase == "Succeeded" else FAILED
        time.sleep(ctx.poll)
    ctx.progress(f"Timed out after {args.timeout:g}s with {name} in phase {phase or 'Pending'}; follow it with "
                 f"`kubectl get restorerequest {name} -n {ctx.namespace} -w`")
    return TIMEOUT


# ------------------------------------------------------------------ entry point


OUTPUTS = ("json", "yaml", "wide", "name")


def _global_flags(top: bool) -> _Parser:
    """kubectl's global flags, for the top parser and (again) for every command, so that they are taken anywhere
    on the line. On the commands the defaults are SUPPRESSed: a flag given before the command is not reset."""
    flags = _Parser(add_help=False)
    default: Any = None if top else argparse.SUPPRESS
    group = flags.add_argument_group("kubectl flags (anywhere on the line)")
    group.add_argument("-n", "--namespace", default=default,
                       help="namespace (default: the context's, else 'default')")
    group.add_argument("-A", "--all-namespaces", action="store_true", default=False if top else argparse.SUPPRESS,
                       help="every namespace (status only)")
    group.add_argument("-o", "--output", default=default, metavar="FORMAT",
                       help="json, yaml, wide or name (which ones depends on the command)")
    group.add_argument("--context", default=default, help="kubeconfig context (default: the current one)")
    group.add_argument("--kubeconfig", default=default, help="kubeconfig file (default: KUBECONFIG or ~/.kube/config)")
    group.add_argument("--poll-interval", type=float, default=2.0 if top else argparse.SUPPRESS,
                       help="seconds between checks while waiting")
    group.add_argument("--version", action="version", version=f"kubectl-pgbackup {installed_version()}",
                       help="print the version and exit")
    return flags


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="kubectl pgbackup", description=__doc__, epilog=EXIT_CODES, parents=[_global_flags(True)],
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    flags = _global_flags(False)

    def command(name: str, run: Callable[[Context, argparse.Namespace], int], help: str, outputs: Collection[str],
                all_namespaces: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, parents=[flags])
        sub.set_defaults(run=run, outputs=tuple(outputs), takes_all_namespaces=all_namespaces)
        return sub

    command("status", cmd_status, "one screen: every policy, its last backup, objectives, WAL lag; "
                                  "exit 1 when one is not Ready or misses its objectives",
            ("json", "yaml", "wide"), all_namespaces=True)

    listing = command("list", cmd_list, "the backups of a policy (from its status, newest first)",
                      ("json", "yaml", "wide"))
    listing.add_argument("policy")

    backup = command("backup", cmd_backup, "take a backup now (sets the pgbackup.dev/backup-now annotation); "
                                           "-o json|yaml prints the recorded result (with --wait)", ("json", "yaml"))
    backup.add_argument("policy")
    backup.add_argument("--wait", action="store_true", help="follow the Job and print the recorded result")
    backup.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait (default 6h)")

    restore = command("restore", cmd_restore, "create a RestoreRequest (and follow it with --wait); -o json|yaml "
                                              "prints the request (the finished one with --wait), -o name its name",
                      ("json", "yaml", "name"))
    restore.add_argument("policy")
    restore.add_argument("--backup", default="latest", help="backup id or 'latest' (default)")
    restore.add_argument("--to-time", help="recover to this RFC 3339 time (needs WAL archiving)")
    restore.add_argument("--target-database", help="database to restore into")
    restore.add_argument("--no-owner", action="store_true",
                         help="everything restored belongs to the restoring user (spec.noOwner)")
    restore.add_argument("--no-privileges", action="store_true",
                         help="do not restore the backup's GRANTs and REVOKEs (spec.noPrivileges)")
    restore.add_argument("--dry-run", action="store_true", help="only resolve and print the plan")
    restore.add_argument("--wait", action="store_true", help="follow the phases, print the plan and the result")
    restore.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait (default 6h)")
    return top


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command line, with the global flags a command cannot use refused as kubectl does."""
    args = parser().parse_args(list(argv))
    if args.output == "table":  # the default, accepted as earlier versions did
        args.output = None
    if args.output is not None and args.output not in args.outputs:
        raise UsageError(f"-o {args.output} is not supported by `{args.command}` (use one of: "
                         f"{', '.join(args.outputs)}; or no -o for the table)")
    if args.all_namespaces and not args.takes_all_namespaces:
        raise UsageError(f"`{args.command}` works on one BackupPolicy: it cannot be used with -A/--all-namespaces; "
                         f"pass -n NAMESPACE")
    if args.command == "backup" and args.output and not args.wait:
        raise UsageError(f"-o {args.output} prints the recorded backup: add --wait")
    return args


def run(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    try:
        try:
            args = parse(argv)
        except SystemExit as done:  # --help, --version
            return done.code if isinstance(done.code, int) else OK
        client, default_namespace = connect(args.kubeconfig, args.context)
        with client:
            ctx = Context(Api(client), args.namespace or default_namespace, out, err, args.poll_interval)
            code: int = args.run(ctx, args)
            return code
    except UsageError as error:
        print(f"error: {error}", file=err)
        return ERROR
    except ApiException as error:
        print(f"error: the Kubernetes API answered {error.status} {error.reason}: {_api_message(error)}", file=err)
        return ERROR
    except OSError as error:  # connection refused, DNS, TLS
        print(f"error: cannot reach the Kubernetes API: {error}", file=err)
        return ERROR
    except KeyboardInterrupt:
        return 130


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body).get("message") or error.body)
    except (TypeError, ValueError):
        return str(error.body or "")


def main() -> None:
    sys.exit(run(sys.argv[1:], sys.stdout, sys.stderr))


if __name__ == "__main__":
    main()
