"""The WAL streamer's state (pgbackup.api.wal.WalStreamState), served over HTTP by wal.status_server.

WalStateTracker combines what the streaming loop tells it (StreamObserver: loop ticks, streaming on/off,
segments and partials shipped, problems) with facts it refreshes on its own timer in a daemon thread:
- the server, over a normal connection: pg_current_wal_lsn(), the timeline, the slot (exists, active,
  retained bytes = pg_current_wal_lsn() - restart_lsn);
- the storage: a listing of wal/ per refresh (last archived segment and .partial, gaps) that starts after the
  files already seen (IncrementalWalListing: only what was archived since, and the .partial, are sent), and
  the catalog's physical base backups (re-read only every `catalog_interval`: they change a few times a day, and
  reading them means one GET per manifest) for the recoverability window. The whole of wal/ is listed again
  every `full_listing_interval` (by default with the catalog), which is when WAL deleted by retention (after a
  backup) stops being reported.

Lag, honestly approximated:
- archivedLsn: everything up to the end of the newest complete archived segment is stored. When a .partial was
  shipped after it, storage also holds what pg_receivewal had flushed before that ship started; the tracker
  knows that position from its last sample of the slot's restart_lsn taken before the ship (the receiver
  reports its flush position every --status-interval), so archivedLsn is a lower bound, never an overstatement.
- lagBytes = serverLsn - archivedLsn.
- lagSeconds: the age of the WAL byte at archivedLsn. The tracker samples (time, pg_current_wal_lsn()) at each
  refresh; that byte was written between the last sample at or below archivedLsn and the first one above it,
  and its time is interpolated linearly between the two (WAL written at a steady rate in between). When every
  sample is above archivedLsn (just started, archive far behind), the age of the oldest sample is reported,
  which is a lower bound. 0 when archivedLsn >= serverLsn.

The server never answers with credentials: the state holds LSNs, names, times and messages that are redacted.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pgbackup.api.wal import WalStreamState
from pgbackup.runner.common.timestamps import utc_now
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import Manifest
from pgbackup.runner.common.log import redact
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.wal.archive import WalArchive
from pgbackup.runner.wal.listing import ArchivedSegment, IncrementalWalListing
from pgbackup.runner.wal.window import find_gaps, format_gap, recoverability_window
from pgbackup.runner.wal.observer import StreamObserver
from pgbackup.runner.wal.slots import receiver_slot_name
from pgbackup.runner.wal.xlog import (
    DEFAULT_SEGMENT_SIZE,
    format_lsn,
    lsn_of_segment_start,
    parse_lsn,
    parse_segment_name,
)

DEFAULT_REFRESH_INTERVAL = 15.0
DEFAULT_CATALOG_INTERVAL = 300.0
_SAMPLES_KEPT = 256
"""(time, LSN) samples for lagSeconds: about an hour at the default interval; older WAL is reported as 'at least'."""
_STATEMENT_TIMEOUT_MS = 5000
_SERVER_QUERY = """
SELECT pg_current_wal_lsn()::text,
       ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')
"""
_SLOT_QUERY = """
SELECT restart_lsn::text, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, active
FROM pg_replication_slots WHERE slot_name = %s
"""
# The receiver slot (stream.receiver_slot_name) follows pg_receivewal's flush position; the archive slot (the
# policy's) holds what storage does not have yet, so slotRetainedBytes and slotExists are about the archive slot.


@dataclass(frozen=True)
class _Sample:
    at: float
    """Tracker clock (monotonic)."""
    wall: datetime
    server_lsn: int
    flushed_lsn: int | None
    """The slot's restart_lsn: what pg_receivewal had flushed (and reported) by then."""


class WalStateTracker(StreamObserver):
    """The streamer's state, updated by the loop (StreamObserver) and refreshed from the server and storage."""

    def __init__(self, params: ConnParams, archive: WalArchive, *, slot: str, catalog: Catalog | None = None,
                 refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
                 catalog_interval: float = DEFAULT_CATALOG_INTERVAL, stall_after: float | None = None,
                 full_listing_interval: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """`full_listing_interval`: how often wal/ is listed in full rather than from the last settled file on
        (None: as often as the catalog is re-read, `catalog_interval`)."""
        self.params = params
        self.archive = archive
        self.slot = slot
        self.catalog = catalog if catalog is not None else Catalog(archive.storage)
        self.refresh_interval = refresh_interval
        self.catalog_interval = catalog_interval
        self.full_listing_interval = catalog_interval if full_listing_interval is None else full_listing_interval
        self._listing = IncrementalWalListing(archive)
        self._listed_in_full_at = -1e18
        # A loop iteration can take a while (a 16 MiB segment to a slow S3, pg_receivewal's 10 s shutdown): the
        # liveness threshold is three refresh intervals unless the caller says otherwise.
        self.stall_after = stall_after if stall_after is not None else 3 * refresh_interval
        self.clock = clock
        self._lock = threading.Lock()
        # Starting until the loop has ensured the slot (streaming(True)): /status answers from the first second,
        # and a slot not created yet is no SlotMissing alarm.
        self._state = WalStreamState(slot_name=slot, starting=True)
        self._problems: dict[str, str] = {}
        self._last_tick = clock()
        self._samples: deque[_Sample] = deque(maxlen=_SAMPLES_KEPT)
        self._seg_size = DEFAULT_SEGMENT_SIZE
        self._archived_full_end: int | None = None
        """End LSN of the newest complete archived segment."""
        self._pending_flushed_lsn: int | None = None
        """The receiver's flush position sampled before the current .partial ship began."""
        self._partial_flushed_lsn: int | None = None
        """What storage holds through the shipped .partial (a lower bound)."""
        self._backups: list[Manifest] | None = None
        self._backups_read_at = -1e18
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- StreamObserver: called by the streaming loop ---------------------------------------------

    def tick(self) -> None:
        self._last_tick = self.clock()

    def streaming(self, on: bool) -> None:
        with self._lock:
            self._state.streaming = on
            if on:
                self._state.starting = False
                self._problems.pop("stopped", None)
            else:
                self._problems["stopped"] = ("WAL streaming has stopped (the pgbackup wal-stream loop ended); "
                                             "the pod restarts it, see its log for why")
            self._publish_locked()

    def segment_archived(self, name: str) -> None:
        with self._lock:
            current = self._state.last_archived_segment
            if current is None or parse_segment_name(name).position >= parse_segment_name(current).position:
                self._state.last_archived_segment = name
                self._state.last_archived_at = utc_now()

    def partial_started(self) -> None:
        with self._lock:
            self._pending_flushed_lsn = self._samples[-1].flushed_lsn if self._samples else None

    def partial_archived(self, name: str) -> None:
        """Storage now holds the .partial as it was on disk when partial_started() was called, or newer: so
        everything pg_receivewal had flushed (and reported) by the sample taken before that is stored."""
        with self._lock:
            flushed, self._pending_flushed_lsn = self._pending_flushed_lsn, None
            segment = parse_segment_name(name)
            start = lsn_of_segment_start(segment, self._seg_size)
            if flushed is not None and flushed >= start:
                flushed = min(flushed, start + self._seg_size)
                self._partial_flushed_lsn = max(self._partial_flushed_lsn or 0, flushed)

    def spool(self, size: int) -> None:
        with self._lock:
            self._state.spool_bytes = size

    def problem(self, source: str, message: str | None) -> None:
        with self._lock:
            if message is None:
                self._problems.pop(source, None)
            else:
                self._problems[source] = message
            self._publish_locked()

    # -- reading ----------------------------------------------------------------------------------

    def snapshot(self) -> WalStreamState:
        with self._lock:
            return self._state.model_copy(deep=True)

    def status_json(self) -> bytes:
        return self.snapshot().model_dump_json(by_alias=True, exclude_none=True).encode()

    def alive(self) -> bool:
        """The loop ticked within stall_after (liveness)."""
        return self.clock() - self._last_tick <= self.stall_after

    # -- refreshing -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="wal-status-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.refresh_interval)

    def refresh(self) -> WalStreamState:
        """Read the server and the storage once; a failing part sets its problem and keeps the rest."""
        server = self._refresh_server()
        self._refresh_storage()
        with self._lock:
            if server:
                self._problems.pop("server", None)
            self._compute_lag_locked()
            self._state.updated_at = utc_now()
            self._publish_locked()
            return self._state.model_copy(deep=True)

    def _refresh_server(self) -> bool:
        where = self.params.describe()
        try:
            with self.params.connect("postgres") as conn:
                conn.execute(f"SET statement_timeout = {_STATEMENT_TIMEOUT_MS}")
                row = conn.execute(_SERVER_QUERY).fetchone()
                slot = conn.execute(_SLOT_QUERY, (self.slot,)).fetchone()
                receiver = conn.execute(_SLOT_QUERY, (receiver_slot_name(self.slot),)).fetchone()
        except Exception as exc:  # noqa: BLE001 - reported in the state, the server keeps answering
            self.problem("server", f"cannot read the WAL position and replication slot {self.slot!r} from "
                                   f"PostgreSQL at {where}: {_clean(exc, self.params)}. Check that the server is "
                                   f"up and reachable and that the user may read pg_replication_slots")
            return False
        assert row is not None
        now = self.clock()
        server_lsn = parse_lsn(row[0])
        with self._lock:
            self._state.server_lsn = row[0]
            self._state.timeline = int(row[1])
            self._seg_size = int(row[2])
            if slot is None and self._state.starting:
                self._state.slot_retained_bytes = None  # not created yet: the loop creates it before streaming
            elif slot is None:
                self._state.slot_exists = False
                self._state.slot_retained_bytes = None
                self._problems["slot_missing"] = (
                    f"replication slot {self.slot!r} is missing on PostgreSQL at {where}: WAL written while it was "
                    f"missing may not be in the archive. The streamer recreates it; check the archive's gaps and "
                    f"take a new physical base backup")
            else:
                self._state.slot_exists = True
                self._state.slot_retained_bytes = max(0, int(slot[1])) if slot[1] is not None else None
                self._problems.pop("slot_missing", None)
            flushed = parse_lsn(receiver[0]) if receiver is not None and receiver[0] is not None else None
            if receiver is not None and receiver[2]:  # pg_receivewal is connected: an earlier exit is over
                self._problems.pop("receiver", None)
            self._samples.append(_Sample(at=now, wall=utc_now(), server_lsn=server_lsn, flushed_lsn=flushed))
        return True

    def _refresh_storage(self) -> None:
        try:
            segments = self._segments()
            backups = self._catalog_backups()
        except Exception as exc:  # noqa: BLE001 - reported in the state, the server keeps answering
            self.problem("storage", f"cannot read the WAL archive at {redact(self.archive.storage.url)}: "
                                    f"{_clean(exc, self.params)}. Check that the storage is reachable and the "
                                    f"credentials can list and read it")
            return
        with self._lock:
            seg_size = self._seg_size
            self._problems.pop("storage", None)
            full = [s for s in segments if not s.partial]
            newest = max(full, key=lambda s: (s.segment.position, s.timeline), default=None)
            if newest is not None:
                self._state.last_archived_segment = newest.name
                self._state.last_archived_at = newest.archived_at
            self._archived_full_end = (lsn_of_segment_start(newest.segment, seg_size) + seg_size
                                       if newest is not None else None)
            partials = [s for s in segments if s.partial and (newest is None or
                                                              s.segment.position > newest.segment.position)]
            if partials:
                self._state.last_partial_at = max(s.archived_at for s in partials)
            self._state.gaps = [format_gap(gap) for gap in find_gaps(segments, seg_size)]
            first, last = recoverability_window(segments, backups, seg_size)
            self._state.first_recoverable_point = first
            self._state.last_recoverable_point = last
            if self._state.gaps:
                self._problems["gaps"] = (f"the WAL archive at {redact(self.archive.storage.url)} misses segments "
                                          f"{', '.join(self._state.gaps)}: recovery cannot replay past the first gap. "
                                          f"Take a new physical base backup")
            else:
                self._problems.pop("gaps", None)

    def _segments(self) -> list[ArchivedSegment]:
        now = self.clock()
        full = now - self._listed_in_full_at >= self.full_listing_interval
        segments = self._listing.refresh(full=full)
        if full:
            self._listed_in_full_at = now
        return segments

    def _catalog_backups(self) -> Sequence[Manifest]:
        now = self.clock()
        if self._backups is None or now - self._backups_read_at >= self.catalog_interval:
            self._backups = [m for m in self.catalog.backups() if m.method == "physical"]
            self._backups_read_at = now
        return self._backups

    def _compute_lag_locked(self) -> None:
        candidates = [lsn for lsn in (self._archived_full_end, self._partial_flushed_lsn) if lsn is not None]
        if not candidates or not self._samples:
            self._state.archived_lsn = None
            self._state.lag_bytes = None
            self._state.lag_seconds = None
            return
        server_lsn = self._samples[-1].server_lsn
        archived = min(max(candidates), server_lsn)
        self._state.archived_lsn = format_lsn(archived)
        self._state.lag_bytes = server_lsn - archived
        self._state.lag_seconds = round(_age_of(archived, list(self._samples), self.clock()), 1)

    def _publish_locked(self) -> None:
        self._state.error = "; ".join(redact(self._problems[k]) for k in sorted(self._problems)) or None


def _age_of(lsn: int, samples: list[_Sample], now: float) -> float:
    """Seconds since the WAL at `lsn` was written, interpolated between (time, server LSN) samples."""
    if lsn >= samples[-1].server_lsn:
        return 0.0
    below = [s for s in samples if s.server_lsn <= lsn]
    if not below:
        return max(0.0, now - samples[0].at)  # older than anything we sampled: at least this old
    before = below[-1]
    after = next(s for s in samples if s.at > before.at and s.server_lsn > lsn)
    share = (lsn - before.server_lsn) / (after.server_lsn - before.server_lsn)
    written = before.at + share * (after.at - before.at)
    return max(0.0, now - written)


def _clean(exc: BaseException, params: ConnParams) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact(params.scrub(text))
