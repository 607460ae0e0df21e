"""The WAL streamer's state over HTTP (pgbackup.api.wal): GET /status -> WalStreamState, GET /healthz -> liveness
of the streaming loop. The server never answers with credentials (see wal.status)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pgbackup.api.wal import ENV_WAL_STATUS_PORT, WAL_HEALTH_PATH, WAL_STATUS_PATH, WAL_STATUS_PORT
from pgbackup.runner.common.errors import UsageError
from pgbackup.runner.common.log import log, log_warning, redact
from pgbackup.runner.wal.status import WalStateTracker


class _Handler(BaseHTTPRequestHandler):
    tracker: WalStateTracker  # set on the subclass made per server
    server_version = "pgbackup-wal-status"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == WAL_STATUS_PATH:
            self._answer(200, self.tracker.status_json())
        elif path == WAL_HEALTH_PATH:
            alive = self.tracker.alive()
            body: dict[str, Any] = {"alive": alive}
            if not alive:
                body["error"] = (f"the WAL streaming loop has not made progress for more than "
                                 f"{self.tracker.stall_after:g} s")
            self._answer(200 if alive else 503, json.dumps(body).encode())
        else:
            self._answer(404, json.dumps({"error": f"not found; try {WAL_STATUS_PATH} or {WAL_HEALTH_PATH}"}).encode())

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        """Probes hit these every few seconds: no access log (errors still reach log_error below)."""

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log_warning("wal.status.http_error", message=redact(format % args))


class StatusServer:
    """A ThreadingHTTPServer in a daemon thread serving a tracker; `port` is the bound one (0 picks a free one)."""

    def __init__(self, tracker: WalStateTracker, *, host: str = "0.0.0.0", port: int = 0) -> None:
        handler = type("WalStatusHandler", (_Handler,), {"tracker": tracker})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="wal-status-http", daemon=True)

    def start(self) -> StatusServer:
        self._thread.start()
        log("wal.status.serving", host=self.host, port=self.port, paths=[WAL_STATUS_PATH, WAL_HEALTH_PATH])
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)


def status_port(environ: Mapping[str, str] | None = None) -> int:
    """The port to serve on: $PGBACKUP_WAL_STATUS_PORT (set in the streamer pod) or WAL_STATUS_PORT."""
    env = os.environ if environ is None else environ
    text = env.get(ENV_WAL_STATUS_PORT, "").strip()
    if not text:
        return WAL_STATUS_PORT
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"{ENV_WAL_STATUS_PORT}={text!r} is not a TCP port (1-65535); unset it to use "
                         f"{WAL_STATUS_PORT}")
    return int(text)
