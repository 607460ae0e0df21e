"""`pgbackup wal-stream`: continuous WAL archiving for any PostgreSQL, without touching its configuration.

pg_receivewal streams WAL over a replication connection into a local directory (the spool). Each completed
segment is shipped with WalArchive.push (compressed, optionally encrypted, SHA-256) and then deleted locally; the
segment being written (`.partial`) is shipped every `partial_interval` so the RPO stays that small. New timeline
history files (after a failover or a PITR promote) are shipped as they appear. pg_receivewal runs with --no-loop:
when it exits, this loop logs why and restarts it with a growing backoff. SIGTERM (Terminated) stops
pg_receivewal and ships what is complete before exiting.

Nothing the server released may exist only in the spool: the spool is the pod's emptyDir, gone with an eviction,
a node drain or a rollout, and a killed pod ships nothing. So two physical replication slots (both created when
missing):
- the archive slot (`slot`, spec.wal.slotName) holds the server's WAL until storage has it. pg_receivewal never
  streams through it (pg_receivewal reports its local flush position, which would move a slot it uses past WAL
  that is only on local disk); this loop advances it with pg_replication_slot_advance() to the end of the newest
  segment shipped, after storage confirmed it (segments are shipped oldest first, so storage holds everything
  before). A .partial does not advance it: the server keeps at most the current segment more than needed.
- the receiver slot (`receiver_slot_name(slot)`) is the one pg_receivewal streams through; it only tells the
  status server how far pg_receivewal has flushed and whether it is connected. It may run ahead of storage.
A new streamer whose spool holds no WAL (a new pod) starts pg_receivewal at the archive slot's position: an empty
`<segment>.partial` in the spool makes pg_receivewal stream that segment from its start, so WAL received (and
lost with the spool) by an earlier pod is received again from the server. Restarts of pg_receivewal, of this
runner, of the pod or of PostgreSQL therefore leave no gap; a storage outage fills the server's pg_wal instead
(slotRetainedBytes, spec.wal.maxSlotRetained), which is the price of losing nothing.

Within one pod, the newest shipped segment stays in the directory as a resume marker: pg_receivewal continues
after the newest complete segment it finds. The password reaches pg_receivewal through its environment only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import psycopg

from pgbackup.api.wal import ENV_WAL_SPOOL_LIMIT
from pgbackup.runner.common.errors import RunnerError, UsageError
from pgbackup.runner.common.log import log, log_warning
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.tools import PgTools
from pgbackup.runner.wal.observer import StreamObserver, StreamState
from pgbackup.runner.wal.slots import advance_slot, ensure_slot, receiver_slot_name
from pgbackup.runner.wal.xlog import (
    DEFAULT_SEGMENT_SIZE,
    classify,
    lsn_of_segment_start,
    parse_lsn,
    parse_segment_name,
    segment_of,
)

_BACKOFF_START = 1.0
_BACKOFF_MAX = 30.0
_HEALTHY_AFTER = 30.0
"""A pg_receivewal that ran this long before exiting restarts without waiting."""
_STDERR_KEEP = 40
_SEED_QUERY = """
SELECT restart_lsn::text, ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')
FROM pg_replication_slots WHERE slot_name = %s
"""


class PushesWal(Protocol):
    def push(self, path: Path) -> object: ...

    def push_partial(self, path: Path) -> object: ...


def spool_limit(environ: Mapping[str, str] | None = None) -> int | None:
    """$PGBACKUP_WAL_SPOOL_LIMIT_BYTES (set in the streamer pod from jobTemplate.scratchSizeLimit); None: no limit."""
    text = (os.environ if environ is None else environ).get(ENV_WAL_SPOOL_LIMIT, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) == 0:
        raise UsageError(f"{ENV_WAL_SPOOL_LIMIT}={text!r} is not a positive number of bytes; unset it for no limit")
    return int(text)


ENV_RECEIVER_STATUS_INTERVAL = "PGBACKUP_WAL_RECEIVER_STATUS_INTERVAL"
"""Seconds between pg_receivewal's status reports to the server (--status-interval); not set by the operator, for
tests that wait for the receiver slot to move."""
DEFAULT_STATUS_INTERVAL = 10


def receiver_status_interval(environ: Mapping[str, str] | None = None) -> int:
    """$PGBACKUP_WAL_RECEIVER_STATUS_INTERVAL, else DEFAULT_STATUS_INTERVAL."""
    text = (os.environ if environ is None else environ).get(ENV_RECEIVER_STATUS_INTERVAL, "").strip()
    if not text:
        return DEFAULT_STATUS_INTERVAL
    if not text.isdigit() or int(text) == 0:
        raise UsageError(f"{ENV_RECEIVER_STATUS_INTERVAL}={text!r} is not a positive number of seconds; unset it "
                         f"for the default ({DEFAULT_STATUS_INTERVAL})")
    return int(text)


class WalStreamer:
    """The streaming loop. `run(until=...)` returns when `until()` is true or `stop` is set; Terminated (SIGTERM)
    ends it too. `clock`/`sleep` are injectable so tests drive it for a bounded time."""

    def __init__(self, params: ConnParams, tools: PgTools, archive: PushesWal, *, slot: str, directory: Path,
                 partial_interval: float = 30.0, progress_interval: float = 30.0, poll_interval: float = 0.5,
                 status_interval: int = DEFAULT_STATUS_INTERVAL, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None, stop: threading.Event | None = None,
                 observer: StreamObserver | None = None, spool_limit: int | None = None,
                 backoff_max: float = _BACKOFF_MAX) -> None:
        self.params = params
        self.tools = tools
        self.archive = archive
        self.slot = slot
        """The archive slot: advanced only to what storage holds."""
        self.receiver_slot = receiver_slot_name(slot)
        self.directory = directory
        self.spool_limit = spool_limit
        """Bytes the spool may hold (the emptyDir's sizeLimit): receiving pauses before it gets there."""
        self._spool_paused = False
        self._largest_file = DEFAULT_SEGMENT_SIZE
        self.partial_interval = partial_interval
        self.progress_interval = progress_interval
        self.poll_interval = poll_interval
        self.status_interval = status_interval
        self.backoff_max = backoff_max
        """The longest wait before retrying a failed upload, a pg_receivewal restart or the slots."""
        self.clock = clock
        self.stop = stop or threading.Event()
        self._sleep = sleep or self.stop.wait
        self.state = StreamState()
        self.observer = observer or StreamObserver()
        self.receiver: subprocess.Popen[bytes] | None = None
        self._receiver_started = 0.0
        self._restart_at = 0.0
        self._backoff = _BACKOFF_START
        self._stderr: list[str] = []
        self._partial_shipped_at = -1e18
        self._partial_signature: tuple[str, int, int] | None = None
        self._progress_at = -1e18
        self._marker: Path | None = None
        self._ship_retry_at = -1e18
        self._ship_backoff = _BACKOFF_START
        self._archived_end: int | None = None
        """End LSN of the newest segment shipped whose advance of the archive slot is still to be done."""

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, until: Callable[[], bool] | None = None) -> StreamState:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.wait_for_slots(until):
            return self.state
        log("wal.stream.start", slot=self.slot, server=self.params.describe(), directory=str(self.directory),
            partial_interval=self.partial_interval)
        self.observer.streaming(True)
        try:
            while not self.stop.is_set() and not (until is not None and until()):
                self.observer.tick()
                self.step()
                self._sleep(self.poll_interval)
        finally:
            self.stop_receiver()
            self.ship_completed()
            self.ship_partial(force=True)
            self.report_progress(force=True)
            log("wal.stream.stopped", slot=self.slot, last_segment=self.state.last_segment,
                segments_shipped=self.state.segments_shipped)
            self.observer.streaming(False)
        return self.state

    def wait_for_slots(self, until: Callable[[], bool] | None = None) -> bool:
        """Create (or find) both slots, retrying with backoff while that fails, with the reason in /status: a
        process that exited instead would restart in a loop that tells the operator nothing. False when stopped
        before the slots exist."""
        backoff = _BACKOFF_START
        while not self.stop.is_set() and not (until is not None and until()):
            self.observer.tick()
            try:
                ensure_slot(self.params, self.slot)
                ensure_slot(self.params, self.receiver_slot)
            except (RunnerError, psycopg.Error) as exc:
                message = self.params.scrub(str(exc).strip())
                log_warning("wal.stream.slot_unavailable", slot=self.slot, error=message, retry_in_seconds=backoff)
                self.observer.problem("slot", message)
                self._sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            self.observer.problem("slot", None)
            return True
        return False

    def step(self) -> None:
        """One round: keep pg_receivewal running (unless the spool is full), ship what is complete, the partial
        when due, progress.
        A failed upload (storage unreachable, a conflict) is logged and retried with backoff: meanwhile the
        segments wait on local disk and the archive slot keeps the server's copy (the spool may be lost)."""
        self.measure_spool()
        if self.spool_full():
            self.stop_receiver()
        else:
            self.supervise()
        if self.clock() >= self._ship_retry_at:
            try:
                self.ship_completed()
                self.ship_partial()
                self._ship_backoff = _BACKOFF_START
                self.observer.problem("ship", None)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a storage outage
                wait = self._ship_backoff
                self._ship_backoff = min(wait * 2, self.backoff_max)
                self._ship_retry_at = self.clock() + wait
                self.state.ship_failures += 1
                log_warning("wal.stream.ship_failed", error=exc, retry_in_seconds=wait,
                            hint="check the storage (reachable, credentials, free space); segments wait locally")
                self.observer.problem("ship", f"shipping WAL to storage failed ({type(exc).__name__}: {exc}); "
                                              f"retrying in {wait:g} s. Check the storage (reachable, credentials, "
                                              f"free space); meanwhile the replication slot {self.slot!r} keeps the "
                                              f"unshipped WAL on the database server")
        self.report_progress()

    # -- pg_receivewal ----------------------------------------------------------------------------

    def receiver_args(self) -> list[str]:
        return [self.tools.path("pg_receivewal"), "-D", str(self.directory), f"--slot={self.receiver_slot}", "--no-loop",
                "--no-password", "--synchronous", f"--status-interval={self.status_interval}", "--verbose"]

    def supervise(self) -> None:
        now = self.clock()
        if self.receiver is not None:
            code = self.receiver.poll()
            if code is None:
                if now - self._receiver_started >= _HEALTHY_AFTER:
                    self._backoff = _BACKOFF_START
                return
            self._collect_stderr()
            self.state.receiver_exits.append(code)
            ran = now - self._receiver_started
            wait = 0.0 if ran >= _HEALTHY_AFTER else self._backoff
            self._backoff = _BACKOFF_START if ran >= _HEALTHY_AFTER else min(self._backoff * 2, self.backoff_max)
            self._restart_at = now + wait
            log_warning("wal.stream.receiver_exited", exit_code=code, ran_seconds=round(ran, 1),
                        restart_in_seconds=wait, stderr=self.params.scrub("\n".join(self._stderr[-8:])),
                        hint="restarting; the archive slot keeps the WAL on the server, so no gap arises")
            last_line = self.params.scrub(self._stderr[-1]) if self._stderr else "no message"
            self.observer.problem("receiver", f"pg_receivewal exited with code {code} ({last_line}); restarting in "
                                              f"{wait:g} s. If it keeps exiting, check that the server is reachable "
                                              f"and the user has the REPLICATION attribute")
            self.receiver = None
        if now < self._restart_at:
            return
        self._start_receiver()

    def _start_receiver(self) -> None:
        self._stderr = []
        try:
            ensure_slot(self.params, self.slot)  # a dropped slot is recreated (the gap check will report a hole)
            ensure_slot(self.params, self.receiver_slot)
            self.seed_spool()
        except (RunnerError, psycopg.Error) as exc:
            message = self.params.scrub(str(exc).strip())
            log_warning("wal.stream.slot_unavailable", slot=self.slot, error=message)
            self.observer.problem("slot", message)
            self._restart_at = self.clock() + self._backoff
            self._backoff = min(self._backoff * 2, self.backoff_max)
            return
        self.observer.problem("slot", None)
        self.receiver = subprocess.Popen(self.receiver_args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, env=self.params.child_env("postgres"))
        self._receiver_started = self.clock()
        self.state.receiver_starts += 1
        threading.Thread(target=self._read_stderr, args=(self.receiver,), daemon=True).start()
        log("wal.stream.receiver_started", pid=self.receiver.pid, slot=self.slot, starts=self.state.receiver_starts)

    def seed_spool(self) -> None:
        """With no WAL in the spool (a new pod), make pg_receivewal start at the archive slot's position: an empty
        `<segment>.partial` for the segment holding its restart_lsn. Without it pg_receivewal would start where
        the receiver slot (or the server) is, after WAL that an earlier pod received but never shipped."""
        if any(classify(p.name) in ("segment", "partial") for p in self.directory.iterdir()):
            return
        with self.params.connect("postgres") as conn:
            row = conn.execute(_SEED_QUERY, (self.slot,)).fetchone()
        if row is None or row[0] is None:
            return
        segment = segment_of(parse_lsn(row[0]), int(row[1]), int(row[2]))
        (self.directory / f"{segment.name}.partial").touch()
        log("wal.stream.spool_seeded", slot=self.slot, restart_lsn=row[0], segment=segment.name)

    def _read_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self._stderr.append(line)
            del self._stderr[:-_STDERR_KEEP]

    def _collect_stderr(self) -> None:
        if self.receiver is not None and self.receiver.stderr is not None:
            time.sleep(0.05)  # let the reader thread take the last lines

    def stop_receiver(self) -> None:
        """SIGINT lets pg_receivewal flush and exit cleanly; SIGKILL if it does not within 10 s."""
        proc = self.receiver
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.receiver = None

    # -- shipping ---------------------------------------------------------------------------------

    def _files(self, kind: str) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file() and classify(p.name) == kind)

    def ship_completed(self) -> None:
        """Push every complete segment and history file, oldest first; delete each after a successful push
        (the newest segment stays as pg_receivewal's resume marker). Then advance the archive slot to the end
        of the newest segment shipped, also when a later push failed."""
        try:
            self._ship_completed()
        finally:
            self.advance_archive_slot()

    def _ship_completed(self) -> None:
        for path in self._files("history"):
            self.archive.push(path)
            self.state.history_shipped.append(path.name)
            log("wal.stream.timeline", history=path.name, timeline=int(path.name[:8], 16))
            path.unlink()
        for path in self._files("segment"):
            if path == self._marker:
                continue
            seg_size = path.stat().st_size
            self.archive.push(path)
            end = lsn_of_segment_start(parse_segment_name(path.name), seg_size) + seg_size
            self._archived_end = max(self._archived_end or 0, end)
            self.state.last_segment = path.name
            self.state.last_shipped_at = self.clock()
            self.state.segments_shipped += 1
            log("wal.stream.segment_archived", segment=path.name)
            self.observer.segment_archived(path.name)
            if self._marker is not None:
                self._marker.unlink(missing_ok=True)
            self._marker = path

    def ship_partial(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._partial_shipped_at < self.partial_interval:
            return
        partials = self._files("partial")
        if not partials:
            return
        self.observer.partial_started()
        path = partials[-1]
        try:
            info = path.stat()
        except FileNotFoundError:  # completed and renamed meanwhile: shipped as a segment next round
            return
        if info.st_size == 0:  # the seed (seed_spool): pg_receivewal has not opened it yet
            return
        signature = (path.name, info.st_size, info.st_mtime_ns)
        self._partial_shipped_at = now
        if signature == self._partial_signature:
            self.observer.partial_archived(path.name)  # unchanged since its upload: storage holds it as it is
            return
        try:
            self.archive.push_partial(path)
        except Exception:
            if not path.exists():  # completed and renamed while being read: shipped as a segment next round
                return
            raise
        self._partial_signature = signature
        self.state.partials_shipped += 1
        self.observer.partial_archived(path.name)
        self.state.last_shipped_at = now
        log("wal.stream.partial_archived", segment=path.name)

    def measure_spool(self) -> None:
        """Bytes in the spool (a handful of files: cheap every round)."""
        size = 0
        for path in self.directory.iterdir():
            try:
                file_size = path.stat().st_size
            except FileNotFoundError:  # renamed or deleted meanwhile
                continue
            size += file_size
            self._largest_file = max(self._largest_file, file_size)
        self.state.spool_bytes = size
        self.observer.spool(size)

    def spool_full(self) -> bool:
        """Whether receiving must pause: the spool would pass its limit with two more segments (the one being
        written is preallocated whole), or holds 80% of it. This loop polls, and a push to a storage that hangs
        blinds it meanwhile: the 20% are the margin for WAL received then. It resumes once everything complete
        is shipped (only the resume marker and the .partial are left). Paused, nothing is lost: the archive slot
        keeps the WAL on the server."""
        if self.spool_limit is None:
            return False
        if self._spool_paused:
            if any(path != self._marker for path in self._files("segment")):
                return True
            self._spool_paused = False
            log("wal.stream.spool_resumed", spool_bytes=self.state.spool_bytes)
            self.observer.problem("spool", None)
            return False
        if self.state.spool_bytes <= min(self.spool_limit - 2 * self._largest_file, self.spool_limit * 0.8):
            return False
        self._spool_paused = True
        message = (f"the local WAL spool holds {self.state.spool_bytes} bytes, near its limit of {self.spool_limit} "
                   f"(jobTemplate.scratchSizeLimit), because storage does not take the WAL: receiving is paused "
                   f"until it is shipped, and the replication slot {self.slot!r} keeps the WAL on the database "
                   f"server meanwhile. Fix the storage; raise scratchSizeLimit for longer outages")
        log_warning("wal.stream.spool_full", spool_bytes=self.state.spool_bytes, limit=self.spool_limit,
                    hint="fix the storage; receiving resumes once the spool is shipped")
        self.observer.problem("spool", message)
        return True

    def advance_archive_slot(self) -> None:
        """Let the server release what storage holds. A failure is logged and retried after the next segment:
        the slot then only keeps more WAL than needed."""
        end = self._archived_end
        if end is None:
            return
        try:
            advance_slot(self.params, self.slot, end)
        except (RunnerError, psycopg.Error) as exc:
            log_warning("wal.stream.slot_advance_failed", slot=self.slot, error=self.params.scrub(str(exc).strip()),
                        hint="the slot keeps more WAL on the server until the next shipped segment advances it")
            return
        self._archived_end = None

    # -- progress ---------------------------------------------------------------------------------

    def measure_lag(self) -> None:
        """Bytes between the server's WAL position and what pg_receivewal has flushed (the receiver slot)."""
        try:
            with self.params.connect("postgres") as conn:
                row = conn.execute(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots "
                    "WHERE slot_name = %s", (self.receiver_slot,)).fetchone()
        except (RunnerError, psycopg.Error):  # e.g. PostgreSQL restarting: a progress line is not worth dying for
            self.state.lag_bytes = None
            return
        self.state.lag_bytes = int(row[0]) if row is not None and row[0] is not None else None
        if self.state.lag_bytes == 0 or self.state.last_shipped_at is None:
            self.state.lag_seconds = 0.0 if self.state.lag_bytes == 0 else None
        else:
            self.state.lag_seconds = round(self.clock() - self.state.last_shipped_at, 1)

    def report_progress(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._progress_at < self.progress_interval:
            return
        self._progress_at = now
        self.measure_lag()
        log("wal.stream.progress", slot=self.slot, last_segment=self.state.last_segment,
            segments_shipped=self.state.segments_shipped, partials_shipped=self.state.partials_shipped,
            spool_bytes=self.state.spool_bytes, lag_bytes=self.state.lag_bytes, lag_seconds=self.state.lag_seconds,
            receiver_running=self.receiver is not None and self.receiver.poll() is None,
            receiver_restarts=max(0, self.state.receiver_starts - 1))
