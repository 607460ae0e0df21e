"""What the WAL streaming loop reports as it goes: to an observer (the status server's WalStateTracker) and in
its own state (logged as progress lines; tests read it)."""

from __future__ import annotations

from dataclasses import dataclass, field


class StreamObserver:
    """Told what the loop does (the status server's WalStateTracker); this base class ignores it all."""

    def tick(self) -> None:
        """One loop iteration ran (liveness)."""

    def streaming(self, on: bool) -> None:
        """The loop started (True) or ended (False)."""

    def segment_archived(self, name: str) -> None:
        """A complete segment is in storage."""

    def partial_started(self) -> None:
        """A .partial ship is due: what pg_receivewal flushed until now will be in storage when it succeeds."""

    def partial_archived(self, name: str) -> None:
        """Storage holds the .partial as it is on disk (uploaded now, or unchanged since the last upload)."""

    def problem(self, source: str, message: str | None) -> None:
        """Something (source: receiver, ship, slot) went wrong, with what to do; None: it is over."""

    def spool(self, size: int) -> None:
        """Bytes in the local spool now."""


@dataclass
class StreamState:
    """What the loop knows (logged as progress lines; tests read it)."""

    last_segment: str | None = None
    last_shipped_at: float | None = None
    """Clock time of the last successful ship (segment or partial)."""
    segments_shipped: int = 0
    partials_shipped: int = 0
    history_shipped: list[str] = field(default_factory=list)
    receiver_starts: int = 0
    receiver_exits: list[int] = field(default_factory=list)
    ship_failures: int = 0
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    spool_bytes: int = 0
