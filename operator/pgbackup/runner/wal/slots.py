"""The two physical replication slots of WAL streaming (see pgbackup.runner.wal.stream): the archive slot, which
holds the server's WAL until storage has it, and the receiver slot pg_receivewal streams through."""

from __future__ import annotations

import hashlib
import re

import psycopg

from pgbackup.runner.common.errors import RunnerError
from pgbackup.runner.common.log import log
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.wal.xlog import format_lsn

SLOT_NAME_MAX = 63
RECEIVER_SLOT_SUFFIX = "_recv"


def default_slot_name(policy_name: str) -> str:
    """pgbackup_<policy name>, with the characters a slot name cannot hold replaced by '_', at most 63 long."""
    return re.sub(r"[^a-z0-9_]", "_", f"pgbackup_{policy_name}".lower())[:SLOT_NAME_MAX]


def receiver_slot_name(slot: str) -> str:
    """The slot pg_receivewal streams through: `<slot>_recv`; a name that would be too long is shortened and
    given a hash of the whole, so two archive slots never share a receiver slot."""
    name = slot + RECEIVER_SLOT_SUFFIX
    if len(name) <= SLOT_NAME_MAX:
        return name
    digest = hashlib.sha256(slot.encode()).hexdigest()[:8]
    return f"{slot[:SLOT_NAME_MAX - len(RECEIVER_SLOT_SUFFIX) - 9]}_{digest}{RECEIVER_SLOT_SUFFIX}"


def advance_slot(params: ConnParams, slot: str, lsn: int) -> bool:
    """Move the archive slot forward to `lsn` (never back: the server refuses that); True when it moved."""
    target = format_lsn(lsn)
    with params.connect("postgres") as conn:
        row = conn.execute("SELECT pg_replication_slot_advance(slot_name, %s::pg_lsn) FROM pg_replication_slots "
                           "WHERE slot_name = %s AND slot_type = 'physical' AND restart_lsn < %s::pg_lsn",
                           (target, slot, target)).fetchone()
    return row is not None


def ensure_slot(params: ConnParams, slot: str) -> bool:
    """Create the physical replication slot (reserving WAL right away) unless it exists; True when created."""
    with params.connect("postgres") as conn:
        row = conn.execute("SELECT slot_type FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        if row is not None:
            if row[0] != "physical":
                raise RunnerError(f"replication slot {slot!r} on {params.describe()} is a {row[0]} slot; WAL streaming "
                                  f"needs a physical one: drop it or set spec.wal.slotName to another name",
                                  reason="SlotMissing")
            return False
        try:
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
        except psycopg.errors.DuplicateObject:
            return False  # created meanwhile (a second pod during a rollout)
        except psycopg.Error as exc:
            raise RunnerError(f"cannot create the physical replication slot {slot!r} on {params.describe()}: "
                              f"{params.scrub(str(exc).strip())}. The user needs the REPLICATION attribute and the "
                              f"server max_replication_slots > 0 (wal_level replica or logical)",
                              reason="SlotMissing") from None
    log("wal.stream.slot_created", slot=slot, server=params.describe())
    return True
