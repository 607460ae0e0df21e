"""A moto S3 server on 127.0.0.1, and (when stunnel is installed) a TLS endpoint in front of it for pgBackRest,
which only speaks https. One object store behind both; every tool gets its own fresh bucket."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from bench.postgres import SetupError, free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _wait_for(url_or_port: str | int, process: subprocess.Popen[bytes], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SetupError(f"{what} exited with {process.returncode} before it answered")
        try:
            if isinstance(url_or_port, str):
                urllib.request.urlopen(url_or_port, timeout=1).close()
            else:
                socket.create_connection(("127.0.0.1", url_or_port), timeout=1).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise SetupError(f"{what} did not answer within {timeout_s:.0f}s")


class S3Server:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.endpoint = ""
        self.tls_port: int | None = None
        self.tls_note = ""

    def start(self) -> None:
        moto = Path(sys.executable).parent / "moto_server"
        if not moto.exists():
            raise SetupError(f"moto_server not found next to {sys.executable}: run 'make deps' (it installs the "
                             "test dependencies, moto[server] among them)")
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.processes.append(self._spawn([str(moto), "-H", "127.0.0.1", "-p", str(port)], "moto.log"))
        _wait_for(f"{self.endpoint}/moto-api/", self.processes[-1], "moto_server")
        self._start_tls_front(port)

    def _spawn(self, cmd: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with (self.workdir / "logs" / log_name).open("ab") as log:
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=self.workdir,
                                    env={**os.environ, "TMPDIR": str(self.workdir)})

    def _start_tls_front(self, moto_port: int) -> None:
        """stunnel with a self-signed certificate (moto's own --ssl ends TLS without close_notify, which
        pgBackRest's OpenSSL 3 rejects)."""
        stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
        if not stunnel or not shutil.which("openssl"):
            self.tls_note = "no stunnel4/openssl: no TLS endpoint, pgBackRest to S3 cannot run"
            return
        tls = self.workdir / "tls"
        tls.mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem"), "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        self.tls_port = free_port()
        (tls / "stunnel.conf").write_text(
            f"foreground = yes\npid =\ndebug = warning\n[s3]\naccept = 127.0.0.1:{self.tls_port}\n"
            f"connect = 127.0.0.1:{moto_port}\ncert = {tls / 'cert.pem'}\nkey = {tls / 'key.pem'}\n")
        self.processes.append(self._spawn([stunnel, str(tls / "stunnel.conf")], "stunnel.log"))
        _wait_for(self.tls_port, self.processes[-1], "stunnel (TLS in front of moto)")
        self.tls_note = "TLS via stunnel in front of moto"

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
                            config=Config(s3={"addressing_style": "path"}))

    def new_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def bucket_bytes(self, bucket: str) -> int:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sum(obj["Size"] for page in pages for obj in page.get("Contents", []))

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
