"""The arithmetic of the RPO benchmark (`python -m bench --rpo`): archive lag from two series of samples.

The server is sampled often (its current WAL position, `pg_current_wal_lsn()`), the archive about once a second
(the newest WAL position it can restore to, counting only files whose checksum verifies). The lag of one archive
sample taken at time t that restores up to position R is t minus the moment the server's WAL reached R, found by
linear interpolation between the two server samples around R: how much of the past a restore from the archive
would lose if the server died at t. An archive that holds none of the sampled WAL yet lags since the first sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """A position `lsn` (bytes) seen at monotonic time `t` (seconds)."""

    t: float
    lsn: int


def reached_at(lsn: int, server: Sequence[Sample]) -> float | None:
    """When the server's WAL reached `lsn`, interpolated between its samples (sorted by time): the first sample's
    time when it was there already, None when no sample reached it."""
    if not server:
        return None
    if lsn <= server[0].lsn:
        return server[0].t
    for before, after in zip(server, server[1:]):
        if before.lsn < lsn <= after.lsn:
            return before.t + (lsn - before.lsn) / (after.lsn - before.lsn) * (after.t - before.t)
    return None


def lag_at(archive: Sample, server: Sequence[Sample]) -> float | None:
    """Seconds the archive sample lags the server. None when the archive is ahead of every server sample taken
    until then (a sampling race: the archive cannot hold WAL the server has not written; it counts as no lag)."""
    seen = [s for s in server if s.t <= archive.t]
    if not seen:
        return None
    if archive.lsn < seen[0].lsn:  # holds none of the sampled WAL: at least as old as the first sample
        return archive.t - seen[0].t
    when = reached_at(archive.lsn, seen)
    return 0.0 if when is None else max(0.0, archive.t - when)


def lags(archive: Sequence[Sample], server: Sequence[Sample]) -> list[float]:
    """The lag of every archive sample that has one (see lag_at), in time order."""
    server = sorted(server, key=lambda s: s.t)
    found = (lag_at(sample, server) for sample in sorted(archive, key=lambda s: s.t))
    return [lag for lag in found if lag is not None]


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank p-th percentile (p in 0..100): the smallest value with at least p % of the values at or
    below it. None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]
