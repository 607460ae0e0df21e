"""The recipes the documentation tells people to type, run as written (the lines are read from the .md files, so
the docs cannot drift from what works): the emergency restore by hand (docs/operations.md), the install of the
runner on a database host and its archive_command / restore_command (docs/database-hosts.md), and the database
role a logical backup needs (docs/security.md). Real PostgreSQL, the stock age/zstd/sha256sum/jq tools."""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.postgres.account import server_account
from tests.fixtures.postgres import PgFactory, PgServer, backup_policy, bindir_for, create_cluster, runner_env

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```", re.M | re.S)


def doc_block(page: str, lang: str, containing: str) -> str:
    """The one fenced block of `lang` on docs/`page` that contains `containing`."""
    found = [m["body"] for m in FENCE.finditer((DOCS / page).read_text())
             if m["lang"] == lang and containing in m["body"]]
    assert len(found) == 1, f"docs/{page}: {len(found)} {lang} blocks contain {containing!r}"
    return found[0]


def commands(block: str) -> list[str]:
    """The command lines of a shell block: comments and blank lines dropped, `# ...` tails kept (bash skips them)."""
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def tools_required(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/install-deps.sh installs them)")


# ---------------------------------------------------------------- emergency restore by hand


@pytest.fixture
def recipe_server(pg_factory: PgFactory) -> PgServer:
    """A PostgreSQL 15 server of its own: the recipe creates databases with the names the docs use."""
    return pg_factory.get("15", "docs-recipes")


def test_emergency_restore_by_hand_runs_as_documented(recipe_server: PgServer, tmp_path: Path) -> None:
    """docs/operations.md, "Emergency restore by hand": every line, under `set -euo pipefail`, against an
    encrypted backup the runner wrote; the new database then holds every row."""
    tools_required("age", "age-keygen", "zstd", "jq", "sha256sum")
    server = recipe_server
    for name in ("orders", "orders_copy"):
        server.query(f"DROP DATABASE IF EXISTS {name}")
    server.query("CREATE DATABASE orders")
    with server.connect("orders") as conn:
        conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, amount numeric(10,2), note text)")
        conn.execute("INSERT INTO orders (amount, note) SELECT i * 1.5, 'order ' || i FROM generate_series(1, 5000) i")
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO customers SELECT i, 'customer ' || i FROM generate_series(1, 300) i")

    home = tmp_path / "home"
    home.mkdir()
    keygen = subprocess.run(["age-keygen", "-o", str(home / "backup-key.txt")], capture_output=True, text=True,
                            check=True)
    recipient = re.search(r"age1[0-9a-z]+", keygen.stderr + keygen.stdout)
    assert recipient, keygen.stderr
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, databases=["orders"],
                             encryption={"recipients": [recipient.group(0)]})
    with pytest.MonkeyPatch.context() as patch:
        runner_env(server, patch, tmp_path)
        code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    stored = next((tmp_path / "volume").rglob(f"{summary.backup_id}/manifest.json")).parent

    # "First copy the backup's directory from storage": here from the volume, under the id the docs show
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(stored, work / "20261123T020000Z")
    recipe = doc_block("operations.md", "bash", "sha256sum -c manifest.json.sha256")
    env = {"PATH": f"{server.bindir}:{SYSTEM_PATH}", "HOME": str(home), "PGHOST": server.host,
           "PGPORT": str(server.port), "PGUSER": server.user, "PGPASSWORD": server.password}
    try:
        done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + recipe], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"the documented recipe failed ({done.returncode}):\n{done.stderr[-3000:]}"
        for table in ("orders", "customers"):
            assert server.query(f"SELECT count(*) FROM {table}", "orders_copy") == \
                server.query(f"SELECT count(*) FROM {table}", "orders")
        assert (work / "20261123T020000Z" / "globals.sql").read_text().strip()

        # the check in the recipe is real: a damaged object stops it before anything is restored
        server.query("DROP DATABASE orders_copy")
        damaged = work / "20261123T020000Z" / "databases" / "orders.dump.zst.age"
        content = damaged.read_bytes()
        damaged.write_bytes(content[:-1] + bytes([content[-1] ^ 0xFF]))  # always a different last byte
        done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + recipe], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr
        assert server.query("SELECT count(*) FROM pg_database WHERE datname = 'orders_copy'") == [(0,)]
    finally:
        for name in ("orders", "orders_copy"):
            server.query(f"DROP DATABASE IF EXISTS {name}")


# ---------------------------------------------------------------- the runner on a database host


@pytest.fixture
def host_root(scratch: Path) -> Path:
    """Stands in for the host's / : world-traversable like / and /opt (pytest's tmp dirs are root-only)."""
    return scratch


def python3_version() -> str:
    done = subprocess.run(["python3", "--version"], capture_output=True, text=True, check=True, timeout=60,
                          env={"PATH": SYSTEM_PATH})
    return done.stdout.strip()


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """The runner's dependencies (and its build backend) as wheels for the host's python3, fetched once per
    machine and dependency list (the directory is named by a hash of both), so the documented `pip install`
    runs offline from them rather than downloading ~40 wheels on every run. The package itself is still
    built from this checkout by the documented line."""
    server_account_name()  # the test that installs skips without it: fetch nothing then
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
    key = hashlib.sha256("\n".join([python3_version(), *needed]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = cache / "pgbackup-tests" / f"wheels-{key}"
    if path.is_dir():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f"{path.name}-", dir=path.parent))
    try:
        subprocess.run(["python3", "-m", "venv", str(building / "venv")], check=True, timeout=300,
                       env={"PATH": SYSTEM_PATH})
        done = subprocess.run([str(building / "venv" / "bin" / "pip"), "wheel", "-q", "--wheel-dir",
                               str(building / "wheels"), *needed], capture_output=True, text=True, timeout=800)
        assert done.returncode == 0, f"fetching the runner's wheels failed:\n{done.stderr[-3000:]}"
        try:
            (building / "wheels").rename(path)  # whole or not at all: a run cut short leaves no half wheelhouse
        except OSError:
            if not path.is_dir():  # else another test run has just put the same wheels there
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return path


def on_host(text: str, root: Path, account: str) -> str:
    """A documented line with the host's paths moved under `root` and `postgres` being the server's account."""
    for path in ("/opt/pgbackup", "/usr/local/bin/pgbackup", "/etc/pgbackup"):
        text = text.replace(path, f"{root}{path}")
    text = text.replace("./pgbackup-operator", str(ROOT))
    return text.replace("-u postgres", f"-u {account}")


def server_account_name() -> tuple[tuple[int, int], str]:
    if os.geteuid() != 0:
        pytest.skip("the server runs as another OS user only when the tests run as root")
    tools_required("runuser")
    account = server_account()
    assert account is not None
    return account, pwd.getpwuid(account[0]).pw_name


def test_a_virtualenv_under_a_private_home_cannot_run_as_the_server_user(host_root: Path) -> None:
    """Why docs/database-hosts.md installs under /opt: a venv in a 0700 directory (root's home) fails for the
    server's user with exit code 126, which PostgreSQL treats as fatal for its archiver."""
    account, name = server_account_name()
    home = host_root / "root"
    home.mkdir(mode=0o700)
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(home / "venv")], check=True, timeout=120,
                   env={"PATH": SYSTEM_PATH})
    # PostgreSQL runs archive_command through `sh -c`, as here
    done = subprocess.run(["runuser", "-u", name, "--", "sh", "-c", f"{home}/venv/bin/python3 -c pass"],
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 126, (done.returncode, done.stderr)


@pytest.mark.timeout(900)
def test_runner_installed_as_documented_archives_wal_as_the_server_user(host_root: Path, wheelhouse: Path) -> None:
    """docs/database-hosts.md: the install lines (run as root with a strict umask, as on a hardened host; pip
    takes the dependencies from the test's wheelhouse instead of the network), the check line as the server's OS
    user, and the postgresql.conf lines on a real PostgreSQL 15 running as that user: WAL it switches away from
    arrives in storage, and restore_command fetches it back."""
    account, name = server_account_name()
    if bindir_for("15") is None:
        pytest.skip("PostgreSQL 15 binaries are not installed (run scripts/install-deps.sh)")
    for directory in ("opt", "usr/local/bin"):
        (host_root / directory).mkdir(parents=True, mode=0o755)
        os.chmod(host_root / directory, 0o755)

    install = "\n".join(on_host(line, host_root, name) for line in commands(
        doc_block("database-hosts.md", "bash", "python3 -m venv /opt/pgbackup")))
    done = subprocess.run(["bash", "-c", "set -euo pipefail\numask 077\n" + install], capture_output=True,
                          text=True, timeout=800, env={"PATH": SYSTEM_PATH, "HOME": str(host_root),
                                                       "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1",
                                                       "PIP_FIND_LINKS": str(wheelhouse)})
    assert done.returncode == 0, done.stderr[-3000:]
    check = on_host(commands(doc_block("database-hosts.md", "bash", "runuser -u postgres"))[0], host_root, name)
    done = subprocess.run(["bash", "-c", check], capture_output=True, text=True, timeout=120,
                          env={"PATH": SYSTEM_PATH}, cwd="/")
    assert done.returncode == 0 and "usage: pgbackup wal-push" in done.stdout, (done.returncode, done.stderr)

    volume = host_root / "srv" / "backups"
    volume.mkdir(parents=True)
    os.chown(volume, *account)
    settings = {}
    for line in commands(doc_block("database-hosts.md", "ini", "archive_command")):
        key, value = (part.strip() for part in line.split("#")[0].split("=", 1))
        settings[key] = on_host(value, host_root, name)
    assert {"archive_mode", "archive_command", "restore_command"} <= set(settings)
    restore_command = settings.pop("restore_command").strip("'")
    server = create_cluster("15", settings=settings)
    server.instance.server_env = {"PGBACKUP_VOLUME_ROOT": str(volume)}  # the postmaster's environment file
    policy = host_root / "etc" / "pgbackup" / "policy.yaml"
    policy.parent.mkdir(parents=True)
    policy.write_text(yaml.safe_dump(backup_policy(server, {"volume": {"claimName": "backups"}}, method="physical")))
    os.chmod(policy.parent, 0o755)
    os.chmod(policy, 0o644)
    try:
        server.start()
        server.query("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i")
        (segment,) = server.query("SELECT pg_walfile_name(pg_current_wal_lsn())")[0]
        server.query("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 120
        archived, failed = 0, 0
        while time.monotonic() < deadline:
            archived, failed, last = server.query(
                "SELECT archived_count, failed_count, last_archived_wal FROM pg_stat_archiver")[0]
            if archived and last is not None and last >= segment or failed:
                break
            time.sleep(0.2)
        assert failed == 0 and archived >= 1, f"archive_command failed: {server.query('SELECT * FROM pg_stat_archiver')}"
        assert [p for p in volume.rglob(f"{segment}*") if "wal" in p.parts], "the segment is not in storage"

        fetched = host_root / "fetch"
        fetched.mkdir()
        os.chown(fetched, *account)
        fetch = restore_command.replace("%f", segment).replace("%p", str(fetched / "RECOVERYXLOG"))
        done = subprocess.run(["runuser", "-u", name, "--", "bash", "-c", fetch], capture_output=True, text=True,
                              timeout=120, cwd="/", env={"PATH": SYSTEM_PATH, "PGBACKUP_VOLUME_ROOT": str(volume)})
        assert done.returncode == 0, done.stderr[-2000:]
        assert (fetched / "RECOVERYXLOG").stat().st_size == 16 * 1024 * 1024
    finally:
        server.close()


# ---------------------------------------------------------------- the backup user's privileges


def test_logical_backup_runs_as_the_documented_backup_role(recipe_server: PgServer, tmp_path: Path) -> None:
    """docs/security.md: a role with only the documented grants takes a logical backup (noRolePasswords)."""
    server = recipe_server
    if int(server.query("SHOW server_version_num")[0][0]) < 140000:
        pytest.skip("pg_read_all_data needs PostgreSQL 14")
    server.query("DROP DATABASE IF EXISTS inventory")
    server.query("CREATE DATABASE inventory")
    with server.connect("inventory") as conn:
        conn.execute("CREATE SCHEMA stock; CREATE TABLE stock.items (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO stock.items SELECT i, 'item ' || i FROM generate_series(1, 100) i")
        conn.execute("REVOKE ALL ON SCHEMA stock FROM PUBLIC")
    grants = doc_block("security.md", "sql", "GRANT pg_read_all_data TO backup")
    server.query("DROP ROLE IF EXISTS backup")
    try:
        with server.connect() as conn:
            for statement in filter(None, (s.strip() for s in grants.split(";"))):
                conn.execute(statement)  # type: ignore[arg-type]
        document = backup_policy(server, {"volume": {"claimName": "backups"}}, databases=["inventory"],
                                 logical={"noRolePasswords": True})
        with pytest.MonkeyPatch.context() as patch:
            runner_env(server, patch, tmp_path)
            patch.setenv("PGUSER", "backup")
            patch.setenv("PGPASSWORD", "change-me")
            code, summary = backup_command(policy_from_document(document, "test"))
        assert code == 0, summary.error
        assert summary.phase == "Completed"
    finally:
        server.query("DROP DATABASE IF EXISTS inventory")
        server.query("DROP ROLE IF EXISTS backup")

