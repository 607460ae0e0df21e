"""Retention: examples a user would check by hand, then the invariants as hypothesis properties."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from pgbackup.api.policy import Compression, Retention
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import Manifest, ManifestObject
from pgbackup.runner.storage.pipeline import store_stream
from pgbackup.runner.backup.housekeeping import apply_retention
from pgbackup.runner.catalog.retention import BackupRef, NEWEST_SUCCESSFUL, NEWEST_VERIFIED, plan_retention
from pgbackup.runner.storage.fs import FilesystemStorage
from tests.runner.storage_support import fs_storage  # noqa: F401 - fixture

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def daily_backups(days: int, hour: int = 2) -> list[BackupRef]:
    return [
        BackupRef(f"b{n:04d}", (NOW - timedelta(days=n)).replace(hour=hour, minute=0)) for n in range(days)
    ]


def kept(decisions: list) -> set[str]:  # type: ignore[type-arg]
    return {d.id for d in decisions if d.keep}


def test_gfs_keeps_newest_of_each_day_week_and_month() -> None:
    backups = daily_backups(120) + [BackupRef("evening", NOW.replace(hour=1) - timedelta(days=1, hours=-20))]
    decisions = plan_retention(backups, Retention(daily=7, weekly=4, monthly=3), NOW)
    by_id = {d.id: d for d in decisions}
    # Day 1 has two backups: the evening one is the newest of that day.
    assert by_id["evening"].keep and any("daily 7" in r for r in by_id["evening"].reasons)
    assert not by_id["b0001"].keep and by_id["b0001"].reasons == ["no retention rule keeps it"]
    daily = {d.id for d in decisions if any(r.startswith("daily") for r in d.reasons)}
    assert len(daily) == 7
    weekly = {d.id for d in decisions if any(r.startswith("weekly") for r in d.reasons)}
    assert len(weekly) == 4
    monthly = [d for d in decisions if any(r.startswith("monthly") for r in d.reasons)]
    assert [r for d in monthly for r in d.reasons if r.startswith("monthly")] == [
        "monthly 3: newest of 2026-11",
        "monthly 3: newest of 2026-10",
        "monthly 3: newest of 2026-09",
    ]
    assert by_id["b0000"].keep and NEWEST_SUCCESSFUL in by_id["b0000"].reasons
    assert len(kept(decisions)) < len(backups)


def test_periods_without_backups_do_not_count() -> None:
    """A policy paused for months still keeps N monthly backups, not N empty months."""
    backups = [BackupRef("jan", datetime(2026, 1, 5, tzinfo=UTC)), BackupRef("mar", datetime(2026, 3, 5, tzinfo=UTC)),
               BackupRef("nov", datetime(2026, 11, 5, tzinfo=UTC))]  # fmt: skip
    assert kept(plan_retention(backups, Retention(monthly=3), NOW)) == {"jan", "mar", "nov"}


def test_max_age_and_keep_last() -> None:
    backups = daily_backups(30)
    assert kept(plan_retention(backups, Retention(max_age="7d"), NOW)) == {f"b{n:04d}" for n in range(7)}
    assert kept(plan_retention(backups, Retention(keep_last=3), NOW)) == {"b0000", "b0001", "b0002"}


def test_newest_verified_and_newest_successful_survive_any_rules() -> None:
    backups = [
        BackupRef("failed-new", NOW - timedelta(hours=1), succeeded=False),
        BackupRef("ok", NOW - timedelta(days=40)),
        BackupRef("verified-old", NOW - timedelta(days=400), verified=True),
        BackupRef("ancient", NOW - timedelta(days=500)),
    ]
    decisions = {d.id: d for d in plan_retention(backups, Retention(max_age="1d"), NOW)}
    assert decisions["ok"].reasons == [NEWEST_SUCCESSFUL]
    assert decisions["verified-old"].reasons == [NEWEST_VERIFIED]
    assert decisions["failed-new"].keep  # within maxAge
    assert not decisions["ancient"].keep


def test_apply_retention_deletes_from_the_catalog(fs_storage: FilesystemStorage) -> None:
    catalog = Catalog(fs_storage)
    for days_ago in (10, 5, 1):
        when = NOW - timedelta(days=days_ago)
        backup_id = catalog.new_id(when)
        obj = store_stream(io.BytesIO(b"rows"), fs_storage, catalog.object_key(backup_id, "db.dump"), compression=Compression())
        catalog.write_manifest(
            Manifest(id=backup_id, policy="p", namespace="n", method="logical", started_at=when, completed_at=when,
                     objects=[ManifestObject.from_stored(obj, backup_id, kind="database", database="db")],
                     server_version="18", compression="zstd")  # fmt: skip
        )
    ids = catalog.ids()
    dry = apply_retention(catalog, Retention(keep_last=1), NOW, dry_run=True)
    assert [d.keep for d in dry] == [True, False, False] and catalog.ids() == ids
    apply_retention(catalog, Retention(keep_last=1), NOW)
    assert catalog.ids() == ids[:1]
    assert {info.key.split("/")[0] for info in fs_storage.list()} == {ids[0]}


# --- properties -------------------------------------------------------------------------------

_moments = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2026, 11, 23, 12), timezones=st.just(UTC)
)


@st.composite
def backup_sets(draw: st.DrawFn) -> list[BackupRef]:
    moments = draw(st.lists(_moments, min_size=0, max_size=40))
    return [
        BackupRef(f"id{n:03d}", moment, verified=draw(st.booleans()), succeeded=draw(st.booleans() | st.just(True)))
        for n, moment in enumerate(moments)
    ]


_counts = st.none() | st.integers(min_value=1, max_value=12)
_ages = st.none() | st.sampled_from(["1d", "7d", "30d", "400d", "12h"])


@st.composite
def rule_sets(draw: st.DrawFn) -> Retention:
    fields = {
        "keep_last": draw(_counts), "daily": draw(_counts), "weekly": draw(_counts),
        "monthly": draw(_counts), "max_age": draw(_ages),
    }  # fmt: skip
    if all(v is None for v in fields.values()):
        fields["keep_last"] = 1
    return Retention(**fields)


def _newest(refs: list[BackupRef]) -> BackupRef | None:
    return max(refs, key=lambda r: (r.completed_at, r.id), default=None)


@settings(max_examples=300, deadline=None)
@given(backup_sets(), rule_sets())
def test_property_protected_backups_are_kept_and_plan_is_complete(backups: list[BackupRef], rules: Retention) -> None:
    decisions = plan_retention(backups, rules, NOW)
    assert sorted(d.id for d in decisions) == sorted(b.id for b in backups)
    keep = kept(decisions)
    newest = _newest([b for b in backups if b.succeeded])
    if newest:
        assert newest.id in keep
    newest_verified = _newest([b for b in backups if b.succeeded and b.verified])
    if newest_verified:
        assert newest_verified.id in keep
    for decision in decisions:
        assert decision.reasons, "every decision explains itself"


@settings(max_examples=300, deadline=None)
@given(backup_sets(), rule_sets())
def test_property_union_of_rules(backups: list[BackupRef], rules: Retention) -> None:
    """The kept set contains what each rule alone keeps (a backup is kept if ANY rule keeps it)."""
    keep = kept(plan_retention(backups, rules, NOW))
    for name, value in rules.model_dump().items():
        if value is not None:
            assert kept(plan_retention(backups, Retention(**{name: value}), NOW)) <= keep


@settings(max_examples=300, deadline=None)
@given(backup_sets(), st.integers(min_value=1, max_value=50))
def test_property_keep_last_keeps_at_least_n(backups: list[BackupRef], n: int) -> None:
    keep = kept(plan_retention(backups, Retention(keep_last=n), NOW))
    good = sorted((b for b in backups if b.succeeded), key=lambda b: (b.completed_at, b.id), reverse=True)
    assert len(keep) >= min(n, len(good))
    assert {b.id for b in good[:n]} <= keep


@settings(max_examples=300, deadline=None)
@given(backup_sets(), rule_sets(), rule_sets())
def test_property_adding_rules_never_deletes_more(backups: list[BackupRef], rules: Retention, extra: Retention) -> None:
    merged = Retention(**{
        k: rules.model_dump()[k] if rules.model_dump()[k] is not None else v for k, v in extra.model_dump().items()
    })  # fmt: skip
    assert kept(plan_retention(backups, rules, NOW)) <= kept(plan_retention(backups, merged, NOW))


@settings(max_examples=200, deadline=None)
@given(backup_sets(), rule_sets(), st.randoms())
def test_property_deterministic_whatever_the_input_order(backups: list[BackupRef], rules: Retention, rnd: object) -> None:
    shuffled = list(backups)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert plan_retention(backups, rules, NOW) == plan_retention(shuffled, rules, NOW)


@settings(max_examples=200, deadline=None)
@given(backup_sets(), st.integers(min_value=1, max_value=12), st.sampled_from(["daily", "weekly", "monthly"]))
def test_property_gfs_keeps_one_per_period(backups: list[BackupRef], n: int, rule: str) -> None:
    period = {
        "daily": lambda t: t.date(), "weekly": lambda t: t.isocalendar()[:2], "monthly": lambda t: (t.year, t.month),
    }[rule]  # fmt: skip
    decisions = plan_retention(backups, Retention(**{rule: n}), NOW)
    by_rule = [d.id for d in decisions if any(r.startswith(rule) for r in d.reasons)]
    good = [b for b in backups if b.succeeded]
    periods = {period(b.completed_at) for b in good}
    assert len(by_rule) == min(n, len(periods))
    refs = {b.id: b for b in backups}
    assert len({period(refs[i].completed_at) for i in by_rule}) == len(by_rule)
    for backup_id in by_rule:  # each is the newest of its period
        mine = refs[backup_id]
        assert all((b.completed_at, b.id) <= (mine.completed_at, mine.id) for b in good if period(b.completed_at) == period(mine.completed_at))
