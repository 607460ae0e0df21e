"""`make demo`: a real backup and restore on this machine, end to end, in about ten seconds.

Starts a throwaway PostgreSQL (Debian's, on a free 127.0.0.1 port) with sample data, or uses $DATABASE_URL;
takes a logical backup (zstd, age-encrypted for the key in .demo/age-identity.txt, generated on the first run and
kept, so that every backup in .demo/backups stays readable) into .demo/backups; restores it into a new
database; compares the row counts; prints the catalog and a summary; stops and removes the server (with
$DATABASE_URL: drops the restored database again, and says so). Exit status 0 only when every table's row count
matches.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pyrage

from pgbackup.api import jobenv
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.cli.catalog import verified_label
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.common.log import set_stream
from pgbackup.runner.postgres.instance import ThrowawayPostgres, ThrowawayServerError
from pgbackup.runner.postgres.tools import server_installations
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.tools import PgTools
from pgbackup.runner.restore.logical import restore_backup
from pgbackup.runner.storage.fs import FilesystemStorage

DEMO_DIR = Path(".demo")
DEMO_USER = "demo_admin"

SAMPLE_SQL = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text, created_at timestamptz DEFAULT now());
INSERT INTO customers (name, email)
  SELECT 'Kunde ' || i || ' – Grüße ✓', CASE WHEN i % 7 = 0 THEN NULL ELSE 'c' || i || '@example.org' END
  FROM generate_series(1, 5000) AS i;
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id), amount numeric(10,2),
  note text);
INSERT INTO orders (customer_id, amount, note)
  SELECT 1 + i % 5000, (i % 1000) * 1.5, 'order note ' || md5(i::text) FROM generate_series(1, 50000) AS i;
CREATE INDEX orders_note_trgm ON orders USING gin (note gin_trgm_ops);
CREATE TABLE attachments (id int PRIMARY KEY, data bytea);
INSERT INTO attachments SELECT i, decode(repeat(md5(i::text), 64), 'hex') FROM generate_series(1, 200) AS i;
"""


@dataclass
class DemoServer:
    params: ConnParams
    database: str


def _say(text: str) -> None:
    print(text, flush=True)


def _demo_tools() -> PgTools:
    """Debian's server packages first (what `make deps` installs), the newest major among them."""
    found = sorted(server_installations(), key=lambda t: (t.bindir.parts[:3] != ("/", "usr", "lib"), -t.major))
    if not found:
        raise SystemExit("no PostgreSQL server binaries found: run `make deps` (scripts/install-deps.sh) first, "
                         "or set DATABASE_URL to use an existing server")
    return found[0]


@contextmanager
def throwaway_server() -> Iterator[DemoServer]:
    tools = _demo_tools()
    instance: ThrowawayPostgres | None = None
    try:
        try:
            instance = ThrowawayPostgres.create(tools=tools, superuser=DEMO_USER,
                                                password=secrets.token_urlsafe(18), settings={"wal_level": "replica"})
            instance.stop_modes = ("immediate",)  # the demo's data is thrown away: no shutdown checkpoint
            instance.start()
        except ThrowawayServerError as exc:
            raise SystemExit(f"PostgreSQL did not start: {exc}") from None
        _say(f"• started PostgreSQL {tools.version} on 127.0.0.1:{instance.port} (data in {instance.datadir})")
        server = DemoServer(instance.conn_params(), "shop")
        with server.params.connect("postgres") as conn:
            conn.execute('CREATE DATABASE "shop"')
        with server.params.connect("shop") as conn:
            conn.execute(SAMPLE_SQL)
        _say("• loaded sample data into database 'shop'")
        yield server
    finally:
        if instance is not None:
            instance.close()
        _say("• stopped and removed the throwaway server")


@contextmanager
def existing_server(url: str) -> Iterator[DemoServer]:
    info = psycopg.conninfo.conninfo_to_dict(url)
    params = ConnParams(host=str(info.get("host") or "127.0.0.1"), port=int(info.get("port") or 5432),
                        user=str(info.get("user") or os.environ.get("PGUSER") or "postgres"),
                        password=str(info["password"]) if info.get("password") else os.environ.get("PGPASSWORD"),
                        sslmode=str(info.get("sslmode") or "prefer"))
    _say(f"• using DATABASE_URL: {params.describe()}")
    yield DemoServer(params, str(info.get("dbname") or "postgres"))


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.2f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KiB"


def demo_identity(identity_file: Path) -> pyrage.x25519.Identity:
    """The demo's age key: the one in `identity_file` when there is one (the backups of earlier runs are
    encrypted for it), else a new one written there."""
    if identity_file.exists():
        keys = [line.strip() for line in identity_file.read_text().splitlines() if line.strip().startswith("AGE-")]
        try:
            return pyrage.x25519.Identity.from_str(keys[0])
        except (IndexError, ValueError, pyrage.IdentityError):
            raise SystemExit(f"{identity_file} holds no age identity (AGE-SECRET-KEY-1...): restore it, or remove "
                             f"{DEMO_DIR} (`make clean`) to start over without the earlier demo backups") from None
    identity = pyrage.x25519.Identity.generate()
    identity_file.write_text(f"# public key: {identity.to_public()}\n{identity}\n")
    identity_file.chmod(0o600)
    return identity


def run_demo() -> int:
    backups = DEMO_DIR / "backups"
    backups.mkdir(parents=True, exist_ok=True)
    identity_file = DEMO_DIR / "age-identity.txt"
    identity = demo_identity(identity_file)
    url = os.environ.get("DATABASE_URL")
    with (existing_server(url) if url else throwaway_server()) as server:
        params = server.params
        os.environ[jobenv.ENV_DB_USER] = params.user
        if params.password:
            os.environ[jobenv.ENV_DB_PASSWORD] = params.password
        os.environ[jobenv.ENV_VOLUME_ROOT] = str(DEMO_DIR.resolve())
        os.environ.pop(jobenv.ENV_SUMMARY_FILE, None)
        document = {"name": "demo", "namespace": "default", "spec": {
            "database": {"host": params.host, "port": params.port, "databases": [server.database],
                         "credentialsSecret": {"name": "demo-db"}, "sslMode": params.sslmode},
            "schedule": "0 2 * * *",
            "storage": {"volume": {"claimName": "demo", "path": "backups"}},
            "compression": {"algorithm": "zstd"},
            "encryption": {"recipients": [str(identity.to_public())]},
            "retention": {"keepLast": 10},
        }}
        started = time.monotonic()
        code, summary = backup_command(policy_from_document(document, "demo"))
        if code != 0:
            _say(f"✗ backup failed ({summary.reason}): {summary.error}")
            return code
        backup_seconds = time.monotonic() - started
        backup_id = str(summary.backup_id)
        catalog = Catalog(FilesystemStorage(backups))
        manifest = catalog.get(backup_id)
        _say(f"• backup {backup_id}: {_size(manifest.raw_size_bytes)} dumped -> {_size(manifest.size_bytes)} stored "
             f"(zstd + age) in {backup_seconds:.1f}s")
        target_db = f"{server.database}_restored_{backup_id.lower().replace('-', '_')}"
        report = restore_backup(catalog, backup_id, params, target_db, str(identity))
        _say(f"• restored into new database {target_db!r} in {report.duration_seconds:.1f}s")
        if url:
            with params.connect("postgres") as conn:
                conn.execute(f'DROP DATABASE "{target_db}"')
            _say(f"• dropped {target_db!r} again: DATABASE_URL's server is left as it was (the backup stays in "
                 f"{backups})")
    _say("\nCatalog (.demo/backups):")
    _say(f"  {'ID':<20} {'METHOD':<8} {'SIZE':>10} {'DURATION':>9} VERIFIED")
    for entry in catalog.backups():
        _say(f"  {entry.id:<20} {entry.method:<8} {_size(entry.size_bytes):>10} {entry.duration_seconds:>8.1f}s "
             f"{verified_label(entry)}")
    foreign = [entry.id for entry in catalog.backups()
               if entry.encryption_recipients and str(identity.to_public()) not in entry.encryption_recipients]
    if foreign:
        _say(f"  ({len(foreign)} of them encrypted for another key than {identity_file}, e.g. {foreign[0]}: "
             f"`make clean` removes them)")
    rows = sum(t.expected or 0 for t in report.tables)
    _say(f"\nRow counts compared: {len(report.tables)} tables, {rows} rows.")
    for check in report.mismatches:
        _say(f"  MISMATCH {check.table}: backed up {check.expected}, restored {check.actual}")
    if not report.ok:
        _say("✗ the restored database differs from the backup")
        return jobenv.EXIT_FAILED
    dump = backups / backup_id / manifest.object_by_kind("database")[0].key
    # to a file first: `... | pg_restore -l` stops reading once it has the table of contents, and under
    # `set -o pipefail` the pipe then ends with 141 although it printed everything
    decrypted = DEMO_DIR / f"{server.database}.dump"
    _say(f"✓ round trip OK. Decrypt by hand: age -d -i {identity_file} {dump} | zstd -d > {decrypted} "
         f"&& pg_restore -l {decrypted}")
    return jobenv.EXIT_OK


def main() -> int:
    """Run the demo with the runner's JSON log lines in .demo/demo.log, keeping the terminal readable."""
    DEMO_DIR.mkdir(exist_ok=True)
    with open(DEMO_DIR / "demo.log", "a") as log_file:
        set_stream(log_file)
        try:
            code = run_demo()
        finally:
            set_stream(None)
    _say(f"(runner log lines: {DEMO_DIR / 'demo.log'})")
    return code


if __name__ == "__main__":
    sys.exit(main())
