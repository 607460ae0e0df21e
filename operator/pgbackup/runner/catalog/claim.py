"""Exclusive backup ids, and the lease that tells a running backup from the leftovers of a dead one.

Two runners of one policy can start in the same second (a backup-now Job beside the scheduled Job). Before a
backup writes anything it claims its id by creating `<id>/claim.json` only if it is absent: O_CREAT|O_EXCL on
a volume, PutObject with `If-None-Match: *` on S3. The loser takes the next id ('<time>-1', ...). A store
that refuses or ignores the condition gets a protocol that needs only read-after-write consistency: the runner
writes `<id>/claim-<token>.json`, then lists `<id>/`, and owns the id only if its claim is the only object
there; otherwise it deletes its claim and tries the next id. Of two runners, the one that lists last sees the
other's claim, so at most one owns an id.

The claim is also the run's lease. While the backup runs, the runner rewrites it every lease/5 (a heartbeat);
it writes its manifest only if its last heartbeat is younger than lease/2. A directory without a manifest
whose claims all say the run ended, or were not renewed for longer than their lease, belongs to a dead run
(killed, evicted, node lost): housekeeping removes it. A runner whose backup fails removes what it wrote
itself, the claim last.
"""

from __future__ import annotations

import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pgbackup.runner.common.log import log, log_warning
from pgbackup.runner.catalog.manifest import new_backup_id
from pgbackup.runner.storage.base import ExclusiveCreateUnsupported, ObjectInfo, Storage, StorageError
from pgbackup.runner.common.timestamps import utc_now

CLAIM_NAME = "claim.json"
ENV_LEASE_SECONDS = "PGBACKUP_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 300
MAX_CANDIDATES = 50


def is_claim_name(name: str) -> bool:
    """Whether a name inside a backup directory is a claim ('claim.json' or 'claim-<token>.json')."""
    return name == CLAIM_NAME or (name.startswith("claim-") and name.endswith(".json") and "/" not in name)


class ClaimRecord(BaseModel):
    """The content of a claim: who runs the backup, since when, and for how long a missed heartbeat is tolerated."""

    model_config = ConfigDict(extra="ignore")

    runner: str
    """Random token of the run."""
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    lease_seconds: int = Field(gt=0)
    state: Literal["running", "ended"] = "running"
    namespace: str | None = None
    policy: str | None = None
    """The BackupPolicy the run writes for: another policy sharing the location leaves its objects alone."""


def lease_seconds(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_LEASE_SECONDS, "")
    try:
        return max(1, int(value)) if value else DEFAULT_LEASE_SECONDS
    except ValueError:
        return DEFAULT_LEASE_SECONDS


def read_claim(storage: Storage, info: ObjectInfo) -> ClaimRecord | None:
    """A claim's record; None when it cannot be read (e.g. being written)."""
    try:
        return ClaimRecord.model_validate_json(storage.get_bytes(info.key))
    except (ValidationError, ValueError, StorageError):
        return None


def run_is_dead(storage: Storage, claims: list[ObjectInfo], now: datetime) -> bool:
    """Whether the claims of one backup directory prove its run is over: every claim says the run ended or
    was not renewed (its storage modification time) for longer than its lease. An unreadable claim (e.g.
    being written) counts as a running one with the default lease."""
    for info in claims:
        record = read_claim(storage, info)
        if record is not None and record.state == "ended":
            continue
        lease = record.lease_seconds if record is not None else DEFAULT_LEASE_SECONDS
        if now - info.modified <= timedelta(seconds=lease):
            return False
    return True


class BackupClaim:
    """An id this run owns, with its heartbeat. Use `held()` around everything the backup writes."""

    def __init__(self, storage: Storage, backup_id: str, key: str, record: ClaimRecord) -> None:
        self.storage = storage
        self.backup_id = backup_id
        self.key = key
        self.record = record
        self._last_beat = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def lease(self) -> int:
        return self.record.lease_seconds

    def _write(self, record: ClaimRecord) -> None:
        self.storage.put_bytes(self.key, record.model_dump_json().encode())

    def beat(self) -> None:
        """Renew the lease; a failure is logged (the backup fails before its manifest if it lasts)."""
        beat_at = time.monotonic()
        try:
            self.record = self.record.model_copy(update={"heartbeat_at": utc_now()})
            self._write(self.record)
        except StorageError as exc:
            log_warning("claim.heartbeat_failed", backup_id=self.backup_id, location=self.storage.location(self.key),
                        error=str(exc)[:300])
            return
        self._last_beat = beat_at

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease / 5):
            self.beat()

    def ensure_held(self) -> None:
        """Raise unless the lease was renewed recently enough that no housekeeping can have taken this run for
        dead (call right before the manifest is written)."""
        silent = time.monotonic() - self._last_beat
        if silent > self.lease / 2:
            raise StorageError(
                f"backup {self.backup_id} could not renew its claim {self.storage.location(self.key)} for "
                f"{silent:.0f}s (lease {self.lease}s): another run may already be removing its objects as those of "
                f"a dead run, so no manifest is written; check the storage is reachable and writable, then rerun"
            )

    @contextmanager
    def held(self) -> Iterator[BackupClaim]:
        """Heartbeat while the body runs; if it fails (any exception, SIGTERM included), remove what this run
        wrote, the claim last, and re-raise."""
        self._thread = threading.Thread(target=self._heartbeat, name=f"claim-{self.backup_id}", daemon=True)
        self._thread.start()
        try:
            yield self
        except BaseException:
            self._stop_heartbeat()
            self.discard()
            raise
        self._stop_heartbeat()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def discard(self) -> None:
        """Remove every object of this run, then its claim. If that fails, mark the claim ended so the next
        backup's housekeeping removes the rest at once; failures here never hide the backup's own error."""
        removed = 0
        try:
            keys = [info.key for info in self.storage.list(f"{self.backup_id}/") if info.key != self.key]
            if keys:
                self.storage.delete(keys)
            removed = len(keys)
            self.storage.delete([self.key])
        except Exception as exc:  # noqa: BLE001 - never hide the backup's own error
            try:
                self._write(self.record.model_copy(update={"state": "ended", "heartbeat_at": utc_now()}))
                hint = "the next backup removes them (the claim records that this run ended)"
            except Exception:  # noqa: BLE001
                hint = f"the next backup removes them once the claim's lease ({self.lease}s) has expired"
            log_warning("claim.discard_failed", backup_id=self.backup_id, location=self.storage.location(
                f"{self.backup_id}/"), error=str(exc)[:300], hint=hint)
            return
        log("claim.discarded", backup_id=self.backup_id, objects=removed)


def claim_backup_id(storage: Storage, now: datetime, *, environ: Mapping[str, str] | None = None,
                    owner: tuple[str, str] | None = None) -> BackupClaim:
    """Claim a fresh id for a backup started at `now`: '<time>', else '<time>-1', ... (ids already present, or
    claimed by a run that started in the same second, are skipped). Only keys starting with the id's time
    are listed: every candidate shares that prefix, and the rest of the storage can be big."""
    base = new_backup_id(now)
    taken = {info.key.split("/", 1)[0] for info in storage.list(base) if "/" in info.key}
    record = _new_record(environ, owner)
    data = record.model_dump_json().encode()
    exclusive = True
    for _ in range(MAX_CANDIDATES):
        candidate = new_backup_id(now, taken)
        taken.add(candidate)
        if exclusive:
            try:
                if storage.create_exclusive(f"{candidate}/{CLAIM_NAME}", data):
                    return _claimed(storage, candidate, f"{candidate}/{CLAIM_NAME}", record, "exclusive-create")
                continue
            except ExclusiveCreateUnsupported as exc:
                log("claim.fallback", storage=storage.url, reason=str(exc)[:300],
                    hint="ids are claimed by writing a claim and listing the directory")
                exclusive = False
        key = f"{candidate}/claim-{record.runner}.json"
        storage.put_bytes(key, data)
        if [info.key for info in storage.list(f"{candidate}/")] == [key]:
            return _claimed(storage, candidate, key, record, "write-and-list")
        storage.delete([key])
        time.sleep(random.uniform(0, 0.1))  # runners that all lost the same round rarely meet again
    raise StorageError(
        f"could not claim a backup id for {base} in {storage.url}: {MAX_CANDIDATES} candidates were taken by other "
        f"runs; check no runaway Jobs of this policy are running"
    )


def claim_known_id(storage: Storage, backup_id: str, *, environ: Mapping[str, str] | None = None,
                   owner: tuple[str, str] | None = None) -> BackupClaim:
    """A claim on an id chosen elsewhere (a copy of a backup keeps the backup's id): `<id>/claim-<token>.json`,
    so the objects being copied are another policy's business and, while it beats, never a dead run's."""
    record = _new_record(environ, owner)
    key = f"{backup_id}/claim-{record.runner}.json"
    storage.put_bytes(key, record.model_dump_json().encode())
    return _claimed(storage, backup_id, key, record, "known-id")


def _new_record(environ: Mapping[str, str] | None, owner: tuple[str, str] | None) -> ClaimRecord:
    started = utc_now()
    namespace, policy = owner if owner is not None else (None, None)
    return ClaimRecord(runner=secrets.token_hex(8), host=socket.gethostname(), pid=os.getpid(), started_at=started,
                       heartbeat_at=started, lease_seconds=lease_seconds(environ), namespace=namespace, policy=policy)


def _claimed(storage: Storage, backup_id: str, key: str, record: ClaimRecord, how: str) -> BackupClaim:
    log("claim.acquired", backup_id=backup_id, location=storage.location(key), how=how,
        lease_seconds=record.lease_seconds)
    return BackupClaim(storage, backup_id, key, record)
