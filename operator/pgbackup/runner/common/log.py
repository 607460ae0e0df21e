"""Structured logging: one JSON object per line on stderr, with secrets scrubbed from every value.

Lines look like {"ts": "2026-11-23T02:00:01.123Z", "level": "info", "event": "upload.progress", ...fields}.
Kubernetes collects stderr; a person reads it with `kubectl logs ... | jq`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

_REDACTED = "***"

# Order matters: the most specific patterns first.
_SECRET_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # age private keys (Bech32, upper case): AGE-SECRET-KEY-1...
    (re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]+", re.IGNORECASE), _REDACTED),
    # URL userinfo: scheme://user:password@host -> scheme://***@host
    (re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@:]*:[^/\s@]*@"), r"\g<scheme>" + _REDACTED + "@"),
    # password=..., passwd: ..., PGPASSWORD=..., "password": "..." (libpq conninfo, env dumps, JSON)
    (
        re.compile(
            r"(?P<key>(?:pass(?:word|wd)?|pgpassword|secret(?:_?access)?(?:_?key)?|aws_secret_access_key|token)"
            r"[\"']?\s*[=:]\s*)(?P<quote>[\"']?)(?P<value>[^\s\"'&;,}]+)",
            re.IGNORECASE,
        ),
        r"\g<key>\g<quote>" + _REDACTED,
    ),
    # Credentials the runner itself holds (below) are scrubbed by value: no guessing from a string's shape,
    # which would also hide innocent names and paths.
]
_SECRET_ENV_VARS = ("PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def _held_secrets() -> list[str]:
    """The secret values in this process's environment, longest first (a value may contain a shorter one)."""
    values = {os.environ.get(name, "") for name in _SECRET_ENV_VARS}
    # the keys of BackupPolicy.spec.copies: PGBACKUP_COPY_<NAME>_AWS_SECRET_ACCESS_KEY
    values |= {value for name, value in os.environ.items()
               if name.startswith("PGBACKUP_COPY_") and name.endswith("_AWS_SECRET_ACCESS_KEY")}
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def _value_pattern(secret: str) -> re.Pattern[str]:
    """`secret` where it stands as a value: not glued to letters or digits on a side where it starts or ends
    with one (a key `test` is redacted in `key=test` or `:test@`, never inside `latest` or `contest_db`)."""
    before = r"(?<!\w)" if re.match(r"\w", secret) else ""
    after = r"(?!\w)" if re.match(r"\w", secret[-1]) else ""
    return re.compile(before + re.escape(secret) + after)


def redact_values(text: str, secrets: Iterable[str]) -> str:
    """Replace each of `secrets` (longest first) where it appears as a value in `text`, not inside words."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        if secret in text:
            text = _value_pattern(secret).sub(_REDACTED, text)
    return text


def redact(text: str) -> str:
    """Scrub passwords, AWS secret keys, age identities and URL credentials from a message."""
    text = redact_values(text, _held_secrets())
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_SECRET_FIELD = re.compile(r"pass(word|wd)?$|secret|token|private|credential_value|identity$", re.IGNORECASE)


def _scrub(value: Any, key: str = "") -> Any:
    if key and _SECRET_FIELD.search(key) and isinstance(value, (str, bytes)) and value:
        return _REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): _scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_scrub(v) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return redact(str(value))


_lock = threading.Lock()
_stream: TextIO | None = None  # None = sys.stderr at the time of writing (pytest's capsys swaps it)


def set_stream(stream: TextIO | None) -> None:
    """Send log lines elsewhere (tests, the CLI's --log-file); None restores stderr."""
    global _stream
    _stream = stream


def _emit(level: str, event: str, fields: dict[str, Any]) -> None:
    record: dict[str, Any] = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": level,
        "event": redact(event),
    }
    for key, value in fields.items():
        if key in record:
            key = f"field_{key}"
        record[key] = _scrub(value, key)
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    with _lock:
        stream = _stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()


def log(event: str, **fields: Any) -> None:
    """Log an informational event as one JSON line."""
    _emit("info", event, fields)


def log_warning(event: str, **fields: Any) -> None:
    """Log something a person should look at, though the work goes on."""
    _emit("warning", event, fields)


def log_error(event: str, **fields: Any) -> None:
    """Log a failure; pass `error=exc` to include the (redacted) exception text."""
    _emit("error", event, fields)


class Progress:
    """Bytes done in a phase, logged as `progress` at least every `interval` seconds and once at the end.

    A heartbeat thread keeps the lines coming while no bytes flow (pg_dump busy on a big table); it stops
    at done() or when the Progress is garbage collected. Thread-safe: pump threads may call add().
    """

    def __init__(
        self,
        phase: str,
        total: int | None = None,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: bool = True,
        **fields: Any,
    ) -> None:
        self.phase = phase
        self.total = total
        self.interval = interval
        self.bytes_done = 0
        self._fields = fields
        self._clock = clock
        self._started = clock()
        self._last_emit = self._started
        self._finished = False
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        if heartbeat:
            threading.Thread(
                target=_heartbeat, args=(weakref.ref(self), self._stopped, interval), name=f"progress-{phase}", daemon=True
            ).start()

    def tick(self) -> None:
        """Log if nothing was logged for an interval (called by the heartbeat)."""
        self.add(0)

    def add(self, n: int) -> None:
        """Count n more bytes; log when the interval has passed."""
        with self._lock:
            self.bytes_done += n
            now = self._clock()
            due = not self._finished and now - self._last_emit >= self.interval
            if due:
                self._last_emit = now
        if due:
            self._emit("progress", now)

    def done(self) -> None:
        """Log the final line (once)."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            now = self._clock()
        self._stopped.set()
        self._emit("progress.done", now)

    def _emit(self, event: str, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        fields: dict[str, Any] = {
            "phase": self.phase,
            "bytes": self.bytes_done,
            "total": self.total,
            "rate_mb_s": round(self.bytes_done / elapsed / 1e6, 2),
            "elapsed_s": round(elapsed, 1),
        }
        if self.total:
            fields["percent"] = round(100.0 * self.bytes_done / self.total, 1)
        log(event, **fields, **self._fields)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.done()


def _heartbeat(ref: weakref.ReferenceType[Progress], stopped: threading.Event, interval: float) -> None:
    while not stopped.wait(interval):
        progress = ref()
        if progress is None:
            return
        progress.tick()
        del progress
