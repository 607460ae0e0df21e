"""The WAL streamer's state (api/wal.py) -> the policy's status.wal, status.recoverability and the WALArchiving
condition (pure: plain spec/status dicts, the state as read, and a clock).

Reasons: Streaming (True), Lagging, Gap, SlotMissing, Failed (False), and Starting (Unknown) while a new
streamer has not answered yet or says it is starting (its slot not yet created or found). A replication slot holding back more than spec.wal.maxSlotRetained adds a
warning to the message whatever the reason: a stuck archiver fills the database server's disk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgbackup.api.policy import Recoverability, WalSpec, WalStatus
from pgbackup.api.wal import WalStreamState
from pgbackup.builders.conditions import Status, find_condition, set_condition
from pgbackup.builders.names import wal_name
from pgbackup.builders.objectives import human

WAL_ARCHIVING = "WALArchiving"
DEFAULT_LAG_THRESHOLD_SECONDS = 60.0
# A new streamer pod needs time to be scheduled, pull its image and connect: until it first answers (or this
# long after the operator first looked), the condition is Unknown/Starting rather than a Failed alarm.
STARTUP_GRACE_SECONDS = 300
# A state whose updatedAt is older than this comes from a streamer whose main loop no longer runs.
STALE_STATE_SECONDS = 300
# Progress alone (lag, newest segment, last recoverable point, a message that only quotes those) is written at
# most this often; what a user must see at once (a reason, a gap, the slot warning) is written on the tick it
# shows up. Less than a minute of staleness in status.recoverability.lastPoint for ObjectivesMet, in exchange for
# about one status write a minute per policy instead of one per tick.
PROGRESS_WRITE_SECONDS = 60

_SIZE = re.compile(r"^(?P<number>[0-9]+)(?P<unit>Ki|Mi|Gi|Ti)?$")
_UNITS = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}


@dataclass(frozen=True)
class WalReport:
    status: Status
    reason: str
    message: str
    reachable: bool
    """False: the streamer did not answer; status.wal and status.recoverability keep their last known values."""
    wal: dict[str, Any] | None = None
    """status.wal as wire dict (when reachable)."""
    recoverability: dict[str, Any] | None = None
    """status.recoverability as wire dict (when reachable); None removes it (no base backup to replay onto)."""
    slot_over_limit: bool = False


def parse_size(text: str) -> int:
    """'10Gi' -> bytes (the spec.wal.maxSlotRetained form: a number with an optional Ki/Mi/Gi/Ti unit)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"invalid size {text!r}: use a number with an optional unit Ki, Mi, Gi or Ti, e.g. '10Gi'")
    return int(match["number"]) * _UNITS[match["unit"]]


def human_bytes(size: int) -> str:
    """12 GiB, 512 MiB, 300 B."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" or value >= 10 else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _time(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def _wal_status(state: WalStreamState) -> dict[str, Any]:
    status = WalStatus(
        last_archived_segment=state.last_archived_segment,
        last_archived_at=state.last_archived_at.replace(microsecond=0) if state.last_archived_at else None,
        lag_seconds=float(round(state.lag_seconds)) if state.lag_seconds is not None else None,
        lag_bytes=state.lag_bytes,
        slot_retained_bytes=state.slot_retained_bytes,
        gaps=list(state.gaps),
        spool_bytes=state.spool_bytes,
    )
    return status.to_wire()


def _recoverability(state: WalStreamState) -> dict[str, Any] | None:
    if state.first_recoverable_point is None and state.last_recoverable_point is None:
        return None
    window = Recoverability(
        first_point=state.first_recoverable_point.replace(microsecond=0) if state.first_recoverable_point else None,
        last_point=state.last_recoverable_point.replace(microsecond=0) if state.last_recoverable_point else None,
    )
    return window.to_wire()


def _in_startup_grace(status: Mapping[str, Any], now: datetime) -> bool:
    previous = find_condition(list(status.get("conditions") or []), WAL_ARCHIVING)
    if previous is None:
        return True
    if previous.get("reason") != "Starting":
        return False
    try:
        since = datetime.fromisoformat(str(previous.get("lastTransitionTime")).replace("Z", "+00:00"))
    except ValueError:
        return False
    return (now - since).total_seconds() < STARTUP_GRACE_SECONDS


def evaluate_wal(policy_name: str, namespace: str, spec: Mapping[str, Any], status: Mapping[str, Any],
                 state: WalStreamState | None, error: str | None, now: datetime,
                 lag_threshold_seconds: float = DEFAULT_LAG_THRESHOLD_SECONDS) -> WalReport:
    """WALArchiving and the WAL status fields for a policy's wire spec and status, given the streamer's state
    (None when it could not be read, with `error` saying why) at `now` (timezone-aware).
    Raises ValueError (pydantic) when spec.wal is invalid."""
    wal_spec = WalSpec.model_validate(spec.get("wal") or {})
    deployment = f"Deployment {namespace}/{wal_name(policy_name)}"
    look = f"look at {deployment} (kubectl -n {namespace} logs deployment/{wal_name(policy_name)})"

    if state is None:
        if _in_startup_grace(status, now):
            return WalReport("Unknown", "Starting", f"waiting for the WAL streamer of {deployment} to answer on its "
                                                    f"status port ({error or 'no answer yet'})", reachable=False)
        return WalReport("False", "Failed", f"the WAL streamer does not answer ({error or 'no answer'}), so nobody "
                                            f"knows whether WAL is archived: {look} and its pod's events "
                                            f"(kubectl -n {namespace} describe deployment {wal_name(policy_name)})",
                         reachable=False)

    slot = state.slot_name or wal_spec.slot_name or "of the policy"
    limit = parse_size(wal_spec.max_slot_retained)
    over_limit = state.slot_retained_bytes is not None and state.slot_retained_bytes > limit
    stale = state.updated_at is not None and (now - state.updated_at).total_seconds() > STALE_STATE_SECONDS
    lag = state.lag_seconds

    if state.starting and (not state.error or _in_startup_grace(status, now)):
        why = f" ({state.error})" if state.error else ""
        result: tuple[Status, str, str] = (
            "Unknown", "Starting", f"the WAL streamer of {deployment} is starting: it has not yet created or found "
                                   f"replication slot {slot}{why}; if this lasts, {look}")
    elif not state.slot_exists:
        problem = f" (streamer: {state.error})" if state.error else ""
        result = (
            "False", "SlotMissing",
            f"replication slot {slot} does not exist on the database server{problem}: WAL written while it is missing "
            f"is lost to the archive, so the recoverability window may end there. The streamer recreates the slot; "
            f"when that fails, {look} (the slot needs a role with REPLICATION and max_replication_slots > 0)")
    elif state.error or not state.streaming or stale:
        what = state.error or (f"its state was last refreshed at {_time(state.updated_at)}" if stale
                               else "it is not streaming")
        result = ("False", "Failed", f"WAL streaming from replication slot {slot} failed: {what}; {look}")
    elif state.gaps:
        last = _time(state.last_recoverable_point)
        window = f"the recoverability window ends before it (last restorable point {last})" if last else \
            "the recoverability window ends before it"
        result = ("False", "Gap", f"WAL missing from storage: {', '.join(state.gaps)}; {window}. Points after the "
                                  f"gap become restorable again with the next physical base backup: take one now "
                                  f"(annotate the policy pgbackup.dev/backup-now=<new value> with method: physical)")
    elif lag is not None and lag > lag_threshold_seconds:
        behind = f" ({human_bytes(state.lag_bytes)} of WAL)" if state.lag_bytes is not None else ""
        result = ("False", "Lagging", f"the archive is {human(lag)} behind the server{behind}, more than "
                                      f"{human(lag_threshold_seconds)}; newest segment "
                                      f"{state.last_archived_segment or 'none yet'}. Check storage throughput and "
                                      f"the streamer: {look}")
    else:
        parts = [f"lag {human(lag)}" if lag is not None else "lag unknown",
                 f"newest segment {state.last_archived_segment or 'none yet'}", f"slot {slot}"]
        if state.first_recoverable_point is None:
            parts.append("no physical base backup yet, so no point in time can be restored: take one "
                         "(method: physical)")
        result = ("True", "Streaming", ", ".join(parts))

    condition_status, reason, message = result
    if over_limit:
        message += (f"; warning: replication slot {slot} holds back {human_bytes(state.slot_retained_bytes or 0)} on "
                    f"the server (maxSlotRetained {wal_spec.max_slot_retained}): a stuck archiver fills the database "
                    f"server's disk")
    return WalReport(condition_status, reason, message, reachable=True, wal=_wal_status(state),
                     recoverability=_recoverability(state), slot_over_limit=over_limit)


def _replacing(stored: Any, wanted: dict[str, Any] | None) -> dict[str, Any] | None:
    """A merge patch turning `stored` into `wanted`: fields that went away are set to null."""
    if wanted is None:
        return None
    patch: dict[str, Any] = dict(wanted)
    for key in stored or {}:
        patch.setdefault(key, None)
    return patch


def wal_patch(spec: Mapping[str, Any], status: Mapping[str, Any], report: WalReport, generation: int | None,
              now: str, progress_due: bool) -> dict[str, Any]:
    """The status fields to write for `report`; empty when nothing changed, or when only progress changed
    (see PROGRESS_WRITE_SECONDS) and `progress_due` is False."""
    conditions = list(status.get("conditions") or [])
    previous = find_condition(conditions, WAL_ARCHIVING) or {}
    stored_wal = status.get("wal")
    stored_window = status.get("recoverability")
    stored_limit_exceeded = False
    if report.reachable and isinstance(stored_wal, Mapping) and stored_wal.get("slotRetainedBytes") is not None:
        limit = parse_size(WalSpec.model_validate(spec.get("wal") or {}).max_slot_retained)
        stored_limit_exceeded = int(stored_wal["slotRetainedBytes"]) > limit

    significant = (previous.get("status"), previous.get("reason")) != (report.status, report.reason)
    if report.reachable:
        significant = significant or (
            (stored_wal or {}).get("gaps", []) != (report.wal or {}).get("gaps", [])
            or (stored_wal is None) != (report.wal is None)
            or (stored_window or {}).get("firstPoint") != (report.recoverability or {}).get("firstPoint")
            or (stored_window is None) != (report.recoverability is None)
            or stored_limit_exceeded != report.slot_over_limit)
    progressed = previous.get("message") != report.message or (report.reachable and (
        stored_wal != report.wal or stored_window != report.recoverability))
    if not significant and not (progressed and progress_due):
        return {}

    patch: dict[str, Any] = {}
    if (previous.get("status"), previous.get("reason"), previous.get("message")) != (report.status, report.reason,
                                                                                      report.message):
        patch["conditions"] = set_condition(conditions, WAL_ARCHIVING, report.status, report.reason, report.message,
                                            generation, now)
    if report.reachable:
        if stored_wal != report.wal:
            patch["wal"] = _replacing(stored_wal, report.wal)
        if stored_window != report.recoverability:
            patch["recoverability"] = _replacing(stored_window, report.recoverability)
    return patch


def clear_wal_patch(status: Mapping[str, Any]) -> dict[str, Any]:
    """With WAL archiving off: no WALArchiving condition and no WAL state (empty when there is none)."""
    conditions = list(status.get("conditions") or [])
    patch: dict[str, Any] = {}
    if find_condition(conditions, WAL_ARCHIVING) is not None:
        patch["conditions"] = [dict(c) for c in conditions if c.get("type") != WAL_ARCHIVING]
    for key in ("wal", "recoverability"):
        if status.get(key) is not None:
            patch[key] = None
    return patch


def transition(status: Mapping[str, Any], report: WalReport) -> tuple[str, bool] | None:
    """The Event reason for a change of WALArchiving (None when status and reason stay), and whether it is a
    transition to False (which sends the WALArchivingFailed notification)."""
    previous = find_condition(list(status.get("conditions") or []), WAL_ARCHIVING) or {}
    if (previous.get("status"), previous.get("reason")) == (report.status, report.reason):
        return None
    event = {"Streaming": "WALArchivingStarted", "Lagging": "WALArchivingLagging", "Gap": "WALArchivingGap",
             "Starting": None}.get(report.reason, "WALArchivingFailed")
    if event is None:
        return None
    return event, report.status == "False" and previous.get("status") != "False"
