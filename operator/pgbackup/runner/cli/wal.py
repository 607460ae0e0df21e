"""`pgbackup wal-fetch | wal-stream`: reading WAL back from the archive and streaming it there
(pgbackup.runner.wal; `wal-push` is the slim pgbackup.runner.cli.walpush)."""

from __future__ import annotations

import argparse
import os

from pgbackup.api import jobenv
from pgbackup.api.base import parse_duration
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import PolicyConfig, scratch_dir
from pgbackup.runner.common.log import log
from pgbackup.runner.common.termination import Terminated
from pgbackup.runner.postgres.facts import server_info
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.tools import find_tools
from pgbackup.runner.storage.identity import identity_from
from pgbackup.runner.wal.archive import archive_for_policy
from pgbackup.runner.wal.status import WalStateTracker
from pgbackup.runner.wal.status_server import StatusServer, status_port
from pgbackup.runner.wal.slots import default_slot_name
from pgbackup.runner.wal.stream import WalStreamer, receiver_status_interval, spool_limit


def cmd_wal_fetch(policy: PolicyConfig, args: argparse.Namespace) -> int:
    archive = archive_for_policy(policy, identity=identity_from(args.identity_file, os.environ))
    if archive.fetch(args.name, args.dest, allow_partial=args.allow_partial):
        return jobenv.EXIT_OK
    log("wal.fetch.not_found", name=args.name, storage=archive.storage.url)  # routine at the end of the archive
    return jobenv.EXIT_FAILED


def cmd_wal_stream(policy: PolicyConfig, args: argparse.Namespace) -> int:
    spec = policy.spec
    params = ConnParams.from_spec(spec.database)
    archive = archive_for_policy(policy)
    slot = spec.wal.slot_name or default_slot_name(policy.name)
    # Served first, so the operator sees why streaming cannot start (the answer's `error`) while this runs.
    tracker = WalStateTracker(params, archive, slot=slot, catalog=Catalog(archive.storage, policy))
    server = StatusServer(tracker, port=status_port()).start()
    tracker.start()
    try:
        with params.connect("postgres") as conn:
            tools = find_tools(server_info(conn).major)
        streamer = WalStreamer(params, tools, archive, slot=slot, directory=scratch_dir() / "wal",
                               partial_interval=parse_duration(spec.wal.partial_upload_interval).total_seconds(),
                               status_interval=receiver_status_interval(), observer=tracker,
                               spool_limit=spool_limit())
        try:
            streamer.run()
        except Terminated:  # the Deployment's pod is being replaced: what was complete has been shipped
            return jobenv.EXIT_OK
        return jobenv.EXIT_OK
    finally:
        tracker.stop()
        server.stop()
