"""`pgbackup verify [ID]`: restore a backup into a throwaway server and record the verdict
(pgbackup.runner.verify)."""

from __future__ import annotations

import argparse
import json
import sys

from pgbackup.runner.common.config import PolicyConfig
from pgbackup.runner.verify.run import run_verification_command


def cmd_verify(policy: PolicyConfig, args: argparse.Namespace) -> int:
    """The `verify` sub-command's handler."""
    code, summary, outcome = run_verification_command(policy, args.backup_id, identity_file=args.identity_file)
    if outcome is None:
        print(f"pgbackup verify: {summary.error}", file=sys.stderr)
        return code
    record = outcome.record
    if args.json:
        print(json.dumps(json.loads(record.to_json()), indent=2))
        return code
    for check in record.checks:
        print(f"{check.name:<60} {'ok' if check.passed else 'FAILED':<7} {check.message}")
    seconds = f"{record.restore_seconds:.1f}s" if record.restore_seconds is not None else "-"
    print(f"{record.phase} ({record.reason}): backup {record.backup_id}, restore {seconds}: {record.message}")
    if outcome.location:
        print(f"recorded in {outcome.location}")
    return code
