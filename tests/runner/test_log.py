"""Structured logs: JSON lines, progress with rate, and no secret ever printed."""

from __future__ import annotations

import io
import json

import pytest

from pgbackup.api.policy import Compression
from pgbackup.runner.common.log import Progress, log, log_error, redact
from pgbackup.runner.storage.pipeline import IdentityError, store_stream
from pgbackup.runner.storage.readback import open_stored
from pgbackup.runner.storage.base import StorageError
from pgbackup.runner.storage.s3 import S3Storage
from tests.fixtures.s3 import S3Bucket
from tests.runner.storage_support import AgeKey, age_key, other_age_key  # noqa: F401 - fixtures

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # 40 characters, like a real one


def lines(err: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("connect failed: host=db port=5432 user=app password=hunter2 dbname=x", "hunter2"),
        ("DATABASE_URL=postgresql://app:hunter2@db:5432/orders", "hunter2"),
        ('{"PGPASSWORD": "hunter2"}', "hunter2"),
        (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", AWS_SECRET),
        ("AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQS5FZQ4", "QYQSZQGP"),
        ("https://user:tok3n@hooks.example.com/x", "tok3n"),
    ],
)
def test_redact_scrubs_secrets(text: str, secret: str) -> None:
    assert secret not in redact(text)


def test_redact_scrubs_the_secrets_the_runner_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("PGPASSWORD", "correct horse battery")
    text = redact(f"signing with {AWS_SECRET} failed; server said: bad 'correct horse battery'")
    assert AWS_SECRET not in text and "correct horse battery" not in text and text.startswith("signing with ***")


def test_redact_keeps_names_that_merely_look_like_keys() -> None:
    forty = "rr-" + "a1B2c3D4e5" * 3 + "f6G7h8I"  # a 40-character object name segment
    text = f"wrote s3://backups/restores/{forty}.json"
    assert len(forty) == 40 and redact(text) == text


def test_redact_keeps_what_people_need() -> None:
    text = "s3://backups/shop/20261123T020000Z/orders.dump.zst sha256 " + "ab" * 32 + " /var/lib/postgresql/data/base/16384/2619"
    assert redact(text) == text


def test_log_lines_are_json_and_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    log("backup.start", policy="orders-db", conninfo="host=db password=hunter2", nested={"url": "http://a:b@c"},
        password="hunter2", env={"AWS_SECRET_ACCESS_KEY": "hunter2", "PGPASSWORD": "hunter2"})
    log_error("backup.failed", error=RuntimeError("auth failed for password=hunter2"))
    first, second = lines(capsys.readouterr().err)
    assert first["event"] == "backup.start" and first["level"] == "info" and first["policy"] == "orders-db"
    assert first["ts"].endswith("Z")
    assert second["level"] == "error" and "RuntimeError" in second["error"]
    assert "hunter2" not in json.dumps([first, second]) and ":b@" not in first["nested"]["url"]


def test_progress_reports_bytes_rate_and_phase(capsys: pytest.CaptureFixture[str]) -> None:
    now = [0.0]
    progress = Progress("dump orders", total=300, clock=lambda: now[0], database="orders")
    progress.add(100)  # before the interval: silent
    now[0] = 10.0
    progress.add(100)  # 10 s passed: a line
    now[0] = 15.0
    progress.add(100)
    progress.done()
    progress.done()  # once only
    records = lines(capsys.readouterr().err)
    assert [r["event"] for r in records] == ["progress", "progress.done"]
    assert records[0] | {"ts": None} == {
        "ts": None, "level": "info", "event": "progress", "phase": "dump orders", "bytes": 200, "total": 300,
        "rate_mb_s": 0.0, "elapsed_s": 10.0, "percent": 66.7, "database": "orders",
    }  # fmt: skip
    assert records[1]["bytes"] == 300 and records[1]["percent"] == 100.0


def test_no_secret_in_logs_or_errors_of_a_real_upload(
    s3_bucket: S3Bucket,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    age_key: AgeKey,
    other_age_key: AgeKey,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)  # moto accepts any secret
    storage = S3Storage(s3_bucket.spec(), max_attempts=1)
    stored = store_stream(io.BytesIO(b"x" * 1000), storage, "b/x", compression=Compression(), recipients=[age_key.recipient])
    errors: list[str] = []
    with pytest.raises(IdentityError) as wrong:
        with open_stored(storage, stored, identity=other_age_key.identity):
            pass
    errors.append(str(wrong.value))
    with pytest.raises(StorageError) as missing:
        S3Storage(s3_bucket.spec(bucket="missing-bucket"), max_attempts=1).put_bytes("b/y", b"1")
    errors.append(str(missing.value))
    output = capsys.readouterr().err + "\n".join(errors)
    for secret in (AWS_SECRET, age_key.identity, other_age_key.identity, "AGE-SECRET-KEY"):
        assert secret not in output


def test_progress_heartbeat_logs_while_no_bytes_flow(capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    beat = threading.Event()
    progress = Progress("dump orders", interval=0.05)
    progress.add(5)
    beat.wait(0.5)  # no bytes for ten intervals: the heartbeat still reports
    progress.done()
    events = [r["event"] for r in lines(capsys.readouterr().err)]
    assert events.count("progress") >= 1 and events[-1] == "progress.done"


def test_redaction_keeps_our_own_error_hints() -> None:
    from pgbackup.runner.storage.s3 import S3Storage as _  # noqa: F401 - the hints below come from there

    hint = (
        "uploading s3://b/k failed: access denied (AccessDenied); check the Secret named by "
        "storage.s3.credentialsSecret (keys accessKeyId and secretAccessKey) and the bucket policy"
    )
    assert redact(hint) == hint


def test_a_short_secret_is_redacted_as_a_value_never_inside_ordinary_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")  # a short key, as on a test store
    text = "restoring the latest backup of database contest_db into testing_copy (attested)"
    assert redact(text) == text
    for leak in ("secret is test", "key=test", "https://app:test@db/x", '{"k": "test"}', "test", "(test)"):
        assert "test" not in redact(leak), leak


def test_a_password_pg_dump_echoes_is_hidden_but_not_inside_words() -> None:
    from pgbackup.runner.common.log import redact_values

    assert redact_values("pg_dump: error: role latest: password test refused", ("test",)) == (
        "pg_dump: error: role latest: password *** refused")
