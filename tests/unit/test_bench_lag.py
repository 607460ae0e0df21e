"""The RPO benchmark's arithmetic (bench/lag.py, bench/archives.py): how long ago the server's WAL was where the
archive can restore to, the percentiles reported, and which archived files count (an unbroken run of verified
segments, a trailing .partial up to its data)."""

from __future__ import annotations

import pytest

from bench.archives import SEGMENT, Piece, data_end, restorable_end
from bench.cli import parse_args
from bench.lag import Sample, lag_at, lags, percentile, reached_at

# the server writes 1000 bytes of WAL per second, sampled every second from t=100
SERVER = [Sample(100.0 + i, 5000 + 1000 * i) for i in range(11)]


def test_lag_is_how_long_ago_the_server_was_where_the_archive_restores_to() -> None:
    # at t=108 the archive restores to 7500: the server was there at t=102.5
    assert lag_at(Sample(108.0, 7500), SERVER) == pytest.approx(5.5)
    # exactly at a sample
    assert lag_at(Sample(108.0, 8000), SERVER) == pytest.approx(5.0)
    # caught up with the newest sample taken by then: no lag
    assert lag_at(Sample(108.0, 13000), SERVER) == pytest.approx(0.0)


def test_an_archive_that_holds_none_of_the_sampled_wal_lags_since_the_first_sample() -> None:
    assert lag_at(Sample(104.0, 4000), SERVER) == pytest.approx(4.0)


def test_only_server_samples_taken_before_the_archive_sample_count() -> None:
    # the archive at t=103.5 cannot be compared with where the server was later
    assert lag_at(Sample(103.5, 9000), SERVER) == pytest.approx(0.0)
    assert lag_at(Sample(99.0, 9000), SERVER) is None  # before any server sample: no lag to report
    assert reached_at(99999, SERVER) is None


def test_lags_and_percentiles() -> None:
    archive = [Sample(105.0, 5000), Sample(106.0, 9000), Sample(107.0, 12000)]
    assert lags(archive, list(reversed(SERVER))) == pytest.approx([5.0, 2.0, 0.0])
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def full(number: int) -> Piece:
    return Piece(number, (number + 1) * SEGMENT)


def test_the_archive_restores_to_the_end_of_its_unbroken_run_of_segments() -> None:
    assert restorable_end([]) is None
    assert restorable_end([full(3), full(4), full(5)]) == 6 * SEGMENT
    # a hole (segment 5 missing or failing its check): nothing after it counts
    assert restorable_end([full(3), full(4), full(6)]) == 5 * SEGMENT
    # a trailing partial counts up to its data; nothing can follow a partial
    partial = Piece(5, 5 * SEGMENT + 123)
    assert restorable_end([full(3), full(4), partial]) == 5 * SEGMENT + 123
    assert restorable_end([Piece(3, 3 * SEGMENT + 10), full(4)]) == 3 * SEGMENT + 10


def test_a_partial_holds_wal_up_to_its_last_non_zero_byte() -> None:
    assert data_end(b"\x01\x02\x00\x03" + b"\x00" * 100) == 4
    assert data_end(b"\x00" * 64) == 0


def test_the_rpo_options() -> None:
    args = parse_args(["--rpo", "--duration", "20", "--modes", "stream,wal_push"])
    assert args.rpo and args.duration == 20 and args.rpo_modes == ["stream", "wal_push"]
    assert parse_args([]).rpo_modes == ["stream", "wal_push", "pgbackrest_async"]
    with pytest.raises(SystemExit) as exc:
        parse_args(["--rpo", "--modes", "stream,rsync"])
    assert exc.value.code == 3
