"""A flaky S3 store is visible: retried requests are logged with their count and last error and counted in the
run's summary; an upload that cannot even be aborted says truthfully when it is cleaned up. Real moto server,
errors injected by an HTTP proxy in front of it (tests.fixtures.s3.RelayProxy)."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from pgbackup.api import jobenv
from pgbackup.api.policy import Compression
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.storage.base import StorageError
from pgbackup.runner.restore.run import run_restore_request
from pgbackup.runner.storage.pipeline import store_stream
from pgbackup.runner.storage.s3 import S3Storage
from tests.fixtures.postgres import PgServer, backup_policy, runner_env
from tests.fixtures.s3 import MotoServer, RelayProxy, S3Bucket, answer_s3_error

MIB = 1024 * 1024


class PartsAndAbortsFail(RelayProxy):
    """Relays everything but UploadPart and AbortMultipartUpload, which always get a 500."""

    def intercept(self, request: Any) -> bool:
        if "uploadId=" in request.path and request.command in ("PUT", "DELETE"):
            return answer_s3_error(request, 500, "InternalError")
        return False


class EveryOtherFails(RelayProxy):
    """Answers every second request with a 500 until `failures` were injected: each retry then succeeds."""

    def __init__(self, upstream_port: int, failures: int) -> None:
        self.failures = failures
        self.injected = 0
        self._seen = 0
        self._lock = threading.Lock()
        super().__init__(upstream_port)

    def intercept(self, request: Any) -> bool:
        with self._lock:
            self._seen += 1
            fail = self._seen % 2 == 0 and self.injected < self.failures
            if fail:
                self.injected += 1
        return answer_s3_error(request, 500, "InternalError") if fail else False


def events(path: Path, name: str, after: int = 0) -> list[dict[str, Any]]:
    """The log lines of event `name`, from line `after` on."""
    return [line for line in map(json.loads, path.read_text().splitlines()[after:]) if line["event"] == name]


def test_an_upload_that_cannot_be_aborted_says_when_it_is_cleaned_up(s3_bucket: S3Bucket, moto_server: MotoServer,
                                                                      runner_log: Path) -> None:
    proxy = PartsAndAbortsFail(moto_server.port)
    try:
        storage = S3Storage(s3_bucket.spec(endpoint=proxy.endpoint), max_attempts=1)
        with pytest.raises(StorageError, match="InternalError"):
            store_stream(io.BytesIO(os.urandom(6 * MIB)), storage, "20260101T000000Z/base.tar",
                         compression=Compression(algorithm="none"))
    finally:
        proxy.close()
    assert len(s3_bucket.incomplete_uploads()) == 1  # really left behind
    (warning,) = events(runner_log, "s3.abort_failed")
    hint = warning["hint"]
    assert "next backup aborts" not in hint
    assert "activeDeadlineSeconds + 1 h" in hint and "7 h" in hint  # when a later backup really aborts it
    assert "AbortIncompleteMultipartUpload" in hint and "abort-multipart-upload" in hint


def test_retries_of_a_flaky_store_are_logged_and_counted_in_the_summaries(
    sample_db: tuple[PgServer, str], s3_bucket: S3Bucket, moto_server: MotoServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, runner_log: Path,
) -> None:
    server, db = sample_db
    proxy = EveryOtherFails(moto_server.port, failures=4)
    try:
        document = backup_policy(server, {"s3": s3_bucket.wire(endpoint=proxy.endpoint)}, databases=[db],
                                 logical={"globals": False})
        summary_file = runner_env(server, monkeypatch, tmp_path)
        code, summary = backup_command(policy_from_document(document, "test"))
        assert code == 0, summary.error
        assert proxy.injected == 4  # every one of them retried, and the backup went through
        retries = events(runner_log, "s3.retry")
        assert len(retries) == 4 and all(r["level"] == "warning" for r in retries)
        assert [r["retries_in_run"] for r in retries] == [1, 2, 3, 4]
        first = retries[0]
        assert "InternalError" in first["error"] and "500" in first["error"]
        assert first["attempt"] == 2 and first["max_attempts"] == 8 and first["operation"]
        assert json.loads(summary_file.read_text())["storageRetries"] == 4  # what the operator reads
        (tally,) = events(runner_log, "storage.retried")
        assert tally["retries"] == 4 and "InternalError" in tally["last_error"]

        proxy.failures += 3  # and a restore through the same flaky store
        mark = len(runner_log.read_text().splitlines())
        monkeypatch.setenv(jobenv.ENV_RESTORE, json.dumps({
            "name": "rr-flaky", "namespace": "shop",
            "spec": {"policyRef": {"name": "orders-db"}, "backup": summary.backup_id,
                     "target": {"host": server.host, "port": server.port, "database": "flaky_copy"}},
            "policy": {"name": document["name"], "spec": document["spec"]}}))
        code, restored = run_restore_request()
        assert code == 0, restored.error
        assert restored.storage_retries == 3 and len(events(runner_log, "s3.retry", mark)) == 3
        assert json.loads(summary_file.read_text())["storageRetries"] == 3
    finally:
        proxy.close()
        server.query("DROP DATABASE IF EXISTS flaky_copy")


def test_a_run_without_retries_has_no_count_in_its_summary(sample_db: tuple[PgServer, str], s3_bucket: S3Bucket,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          runner_log: Path) -> None:
    server, db = sample_db
    document = backup_policy(server, {"s3": s3_bucket.wire()}, databases=[db], logical={"globals": False})
    summary_file = runner_env(server, monkeypatch, tmp_path)
    code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    assert "storageRetries" not in json.loads(summary_file.read_text())
    assert events(runner_log, "s3.retry") == [] and events(runner_log, "storage.retried") == []
