"""`make demo` (python -m pgbackup.runner.cli.demo) works from a fresh directory, again in the same directory, and
against a server of the user's (DATABASE_URL); it cleans up after itself and says what it removed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.postgres import PgServer, bindir_for, load_sample

PATH = "/usr/bin:/bin"


def demo(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "pgbackup.runner.cli.demo"], cwd=cwd,
                          env={"PATH": PATH, "HOME": str(cwd), **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "round trip OK" in done.stdout
    return done


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One `make demo` in a fresh directory; the tests that run it again each start from a copy of what it left."""
    if bindir_for("15") is None and bindir_for("18") is None:
        pytest.skip("no PostgreSQL server binaries installed")
    directory = tmp_path_factory.mktemp("first-demo")
    return directory, demo(directory)


def after_first_run(first_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    shutil.copytree(first_run[0] / ".demo", tmp_path / ".demo")


def test_demo_round_trip_twice_keeps_every_backup_readable(
        first_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    assert "stopped and removed the throwaway server" in first_run[1].stdout
    after_first_run(first_run, tmp_path)
    identity_file = tmp_path / ".demo" / "age-identity.txt"
    key = identity_file.read_text()

    second = demo(tmp_path)  # `make demo` again: the same key, so the first backup stays readable

    assert identity_file.read_text() == key
    manifests = sorted((tmp_path / ".demo" / "backups").glob("*/manifest.json"))
    assert len(manifests) == 2
    for manifest in manifests:
        dump = next(o["key"] for o in json.loads(manifest.read_text())["objects"] if o["kind"] == "database")
        decrypted = subprocess.run(["age", "-d", "-i", str(identity_file), str(manifest.parent / dump)], cwd=tmp_path,
                                   capture_output=True, env={"PATH": PATH})
        assert decrypted.returncode == 0, decrypted.stderr.decode()

    # the decrypt-by-hand line it prints works as shown, also in a strict shell
    line = second.stdout.split("Decrypt by hand: ", 1)[1].splitlines()[0]
    by_hand = subprocess.run(["bash", "-c", f"set -euo pipefail; {line}"], cwd=tmp_path, capture_output=True,
                             text=True, env={"PATH": PATH}, timeout=120)
    assert by_hand.returncode == 0, by_hand.stderr
    assert "TABLE DATA public orders" in by_hand.stdout


def test_demo_with_database_url_says_that_it_drops_its_restored_database(pg15: PgServer, tmp_path: Path) -> None:
    database = load_sample(pg15)
    url = f"postgresql://{pg15.user}:{pg15.password}@{pg15.host}:{pg15.port}/{database}"

    done = demo(tmp_path, DATABASE_URL=url)

    restored = [name for (name,) in pg15.query("SELECT datname FROM pg_database") if name.startswith(f"{database}_restored_")]
    assert restored == []  # the user's server is left as it was...
    assert "dropped 'shop_restored_" in done.stdout  # ...and the demo says so
    assert pg15.password not in done.stdout + done.stderr


def test_demo_names_backups_an_earlier_key_encrypted(first_run: tuple[Path, subprocess.CompletedProcess[str]],
                                                     tmp_path: Path) -> None:
    """Backups left by a demo that wrote a new key on every run (before the key was kept) cannot be read with
    today's key: the demo says so, and how to start clean."""
    after_first_run(first_run, tmp_path)
    (tmp_path / ".demo" / "age-identity.txt").unlink()  # what every run of the old demo did: a new key

    done = demo(tmp_path)

    assert "1 of them encrypted for another key than .demo/age-identity.txt" in done.stdout
    assert "make clean" in done.stdout
