"""The settings a throwaway server runs with: a fresh one (fast, loopback only, optionally able to stream WAL)
and one started on a restored data directory (its own settings kept, except what would make it unreachable,
slow, or archive and replicate from the copy), and its trust-only pg_hba.conf."""

from __future__ import annotations

from collections.abc import Mapping

BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "'64MB'",
    "max_connections": "40",
    "logging_collector": "off",
    "ssl": "off",
    "archive_mode": "off",
    "max_wal_senders": "0",
    "wal_level": "minimal",
}
REPLICATION_SETTINGS = {"wal_level": "replica", "max_wal_senders": "5", "max_replication_slots": "5",
                         "wal_keep_size": "'256MB'", "full_page_writes": "on"}
# A restored cluster keeps its own settings (max_connections, shared_preload_libraries, ...) except these,
# which would make it unreachable, slow, or try to archive/replicate from the throwaway copy.
RESTORED_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "shared_buffers": "'64MB'",
    "logging_collector": "off",
    "ssl": "off",
    "archive_mode": "off",
    "hot_standby": "off",
    "primary_conninfo": "''",
    "primary_slot_name": "''",
    "restore_command": "'false'",
    "archive_cleanup_command": "''",
    "recovery_end_command": "''",
    "recovery_target": "'immediate'",
    "recovery_target_action": "'promote'",
    "recovery_target_timeline": "'current'",
}
TRUST_HBA = """# written by pgbackup for a throwaway verification server: loopback and a private socket only
local   all          all                 trust
host    all          all   127.0.0.1/32  trust
local   replication  all                 trust
host    replication  all   127.0.0.1/32  trust
"""


def conf_lines(settings: Mapping[str, str]) -> str:
    return "".join(f"{name} = {value}\n" for name, value in settings.items())
