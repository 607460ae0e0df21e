"""`pgbackup backup`: one backup as the policy says, its summary, then the housekeeping (pgbackup.runner.backup)."""

from __future__ import annotations

import argparse

from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.common.config import PolicyConfig


def cmd_backup(policy: PolicyConfig, args: argparse.Namespace) -> int:
    code, summary = backup_command(policy, force_full=bool(getattr(args, "full", False)))
    print(summary.to_termination_message())
    return code
