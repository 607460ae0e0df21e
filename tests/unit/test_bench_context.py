"""The benchmark's working directory (`python -m bench --workdir DIR`)."""

from __future__ import annotations

from pathlib import Path

from bench.context import new_workdir


def test_a_workdir_parent_that_does_not_exist_yet_is_made(tmp_path: Path) -> None:
    parent = tmp_path / "not" / "yet"
    workdir = new_workdir("pgbackup-bench-", str(parent))
    assert workdir.parent == parent
    assert (workdir / "logs").is_dir()
