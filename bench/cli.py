"""`python -m bench` (`make bench`): build the dataset once, run every selected tool on it, print the table.
`python -m bench --rpo`: the archive lag of WAL streaming and archive_command under pgbench instead (bench/rpo.py).
`python -m bench --incremental`: an incremental physical backup after a 1 % change vs a full, per tool
(bench/incremental.py).

Exit codes: 0 the run completed (a tool that failed or is missing is a row saying so, not an error), 1 the
benchmark could not set up (no PostgreSQL, the server or moto did not start), 3 bad arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar

from bench import anchors, candidates, dataset, incremental, incremental_report, rpo
from bench.context import Context, Tool, ToolUnavailable, leave_workdir, new_workdir
from bench.install import ensure_tools, say
from bench.postgres import Postgres, SetupError, newest_bindir, server_account
from bench.report import BASELINES, MIB, Row, render, to_json
from bench.s3 import CREDENTIALS, S3Server

R = TypeVar("R")

TOOLS: tuple[Tool, ...] = (*anchors.BACKUPS, *candidates.BACKUPS, *anchors.RESTORES, *candidates.RESTORES)
BY_ID = {tool.id: tool for tool in TOOLS}
JOBS = 2  # parallelism of -j, process-max, -J, as in the shared harness
EXIT_SETUP, EXIT_USAGE, EXIT_INTERRUPTED = 1, 3, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=5, help="pgbench scale (default 5: 316 MiB with the docs table)")
    p.add_argument("--vector-rows", type=int, default=100_000, help="rows of the docs table (default 100000; 0: none)")
    p.add_argument("--only", default="", help="comma list of tool ids to run (the tools they restore from and the "
                                              f"baselines are added); ids: {','.join(BY_ID)}")
    p.add_argument("--skip", default="", help="comma list of tool ids not to run")
    p.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    p.add_argument("--timeout", type=float, default=1800, help="seconds one command may take (default 1800)")
    p.add_argument("--pg-bindir", type=Path, help="PostgreSQL bin directory (default: newest Debian one)")
    p.add_argument("--workdir", type=Path, help="parent of the temporary directory (default: $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (data, each tool's log)")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install missing tools")
    p.add_argument("--rpo", action="store_true", help="measure archive lag under pgbench instead (bench/rpo.py)")
    p.add_argument("--duration", type=float, default=120, help="--rpo: seconds of pgbench per mode (default 120)")
    p.add_argument("--clients", type=int, default=4, help="--rpo: pgbench clients (default 4)")
    p.add_argument("--modes", default=",".join(rpo.MODES), help=f"--rpo: comma list of {','.join(rpo.MODES)}")
    p.add_argument("--partial-interval", default="5s", help="--rpo: the streamer's partialUploadInterval (5s)")
    p.add_argument("--archive-timeout", default="60s", help="--rpo: archive_timeout of archive_command modes (60s)")
    p.add_argument("--incremental", action="store_true", help="an incremental physical backup after changing 1 %% "
                   "of the data vs a full: pg_basebackup, pgBackRest, the runner (bench/incremental.py)")
    args = p.parse_args(argv)
    if args.rpo and args.incremental:
        p.error("--rpo and --incremental are separate runs: pass one of them")
    args.rpo_modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(args.rpo_modes) - set(rpo.MODES):
        p.error(f"unknown --modes {','.join(set(args.rpo_modes) - set(rpo.MODES))}; known: {','.join(rpo.MODES)}")
    try:
        args.selected = select(args.only, args.skip)
    except ValueError as e:
        p.error(str(e))
    return args


def _ids(text: str) -> list[str]:
    ids = [i.strip() for i in text.split(",") if i.strip()]
    unknown = [i for i in ids if i not in BY_ID]
    if unknown:
        raise ValueError(f"unknown tool id(s) {', '.join(unknown)}; known: {', '.join(BY_ID)}")
    return ids


def _with_needs(ids: set[str]) -> set[str]:
    """`ids` and, transitively, the tools whose output they read."""
    done: set[str] = set()
    pending = list(ids)
    while pending:
        tool_id = pending.pop()
        if tool_id not in done:
            done.add(tool_id)
            pending.extend(BY_ID[tool_id].needs)
    return done


def select(only: str, skip: str) -> list[Tool]:
    """The tools to run, in run order: --only (all when empty) plus what they need and the baselines of their
    kinds, minus --skip."""
    chosen = _with_needs(set(_ids(only)) or set(BY_ID))
    kinds = {BY_ID[i].kind for i in chosen}
    chosen = _with_needs(chosen | {base for kind, base in BASELINES.items() if kind in kinds})
    chosen -= set(_ids(skip))
    return [tool for tool in TOOLS if tool.id in chosen]


def _version(cmd: list[str]) -> str:
    if not shutil.which(cmd[0]):
        return "not installed"
    done = subprocess.run(cmd, capture_output=True, text=True)
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]


def run_tool(ctx: Context, tool: Tool) -> Row:
    row = Row(tool.id, tool.kind, tool.label)
    say(f"{tool.label} ...")
    try:
        ctx.pg.set_archive_command("/bin/true")  # a tool that archives WAL switches it on for itself
        tool.run(ctx, row)
    except ToolUnavailable as e:
        row.error = str(e)
    except (KeyboardInterrupt, SetupError):
        raise
    except Exception as e:  # a tool's failure is its row, the other tools still run
        row.error = f"{type(e).__name__}: {e}"
    say(f"  -> {row.wall_s:.1f}s" if row.ok else f"  -> not run: {row.error}")
    return row


def run(args: argparse.Namespace, meta: dict[str, Any], rows: list[Row]) -> None:
    if not args.no_install:
        meta["install_problems"] = ensure_tools()
    workdir = new_workdir("pgbackup-bench-", args.workdir)
    pg: Postgres | None = None
    s3 = S3Server(workdir)
    try:
        pg = Postgres(args.pg_bindir or newest_bindir(), workdir, server_account(), server_extra_env=CREDENTIALS)
        s3.start()
        pg.start()
        meta.update(postgres=pg.psql("SHOW server_version", "postgres"), pgbackrest=_version(["pgbackrest", "version"]),
                    barman_cloud=_version(["barman-cloud-backup", "--version"]), s3_tls=s3.tls_note)
        say(f"building the dataset: pgbench scale {args.scale} + {args.vector_rows} docs rows ...")
        started = time.monotonic()
        data = dataset.build(pg, args.scale, args.vector_rows)
        meta.update(vector_type=data.vector_type, db_size_bytes=data.db_size_bytes,
                    dataset_build_s=round(time.monotonic() - started, 1))
        say(f"database {data.db_size_bytes / MIB:.1f} MiB, built in {meta['dataset_build_s']}s")
        ctx = Context(pg, s3, data, workdir, JOBS, args.timeout)
        for tool in args.selected:
            rows.append(run_tool(ctx, tool))
    finally:
        if pg is not None:
            pg.stop()
        s3.stop()
        leave_workdir(workdir, args.keep, " (data directory and one log per tool in logs/)")


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    meta: dict[str, Any] = {
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "scale": args.scale, "vector_rows": args.vector_rows, "cpus": os.cpu_count(), "kernel": platform.release(),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    if args.rpo:
        def run_rpo(rows: list[rpo.RpoRow]) -> None:
            if not args.no_install:
                meta["install_problems"] = ensure_tools()
            rpo.run(args, meta, rows)
        return _report(args, meta, run_rpo, rpo.render, rpo.to_json, "the archivers")
    if args.incremental:
        def run_incremental(rows: list[incremental_report.IncrRow]) -> None:
            if not args.no_install:
                meta["install_problems"] = ensure_tools()
            incremental.run(args, meta, rows)
        return _report(args, meta, run_incremental, incremental_report.render, incremental_report.to_json,
                       "the backups")
    return _report(args, meta, lambda rows: run(args, meta, rows), render, to_json, "the tool")


def _report(args: argparse.Namespace, meta: dict[str, Any], execute: Callable[[list[R]], None],
            render_rows: Callable[[dict[str, Any], list[R]], str],
            rows_json: Callable[[dict[str, Any], list[R]], Any], what_ran: str) -> int:
    """Run one benchmark into its rows, then print the table and write the JSON of what it got, also after an
    interruption or a setup failure; the exit code says which."""
    rows: list[R] = []
    code = 0
    try:
        execute(rows)
    except KeyboardInterrupt:
        say(f"interrupted: stopped {what_ran}, the server and moto, removed the work directory")
        code = EXIT_INTERRUPTED
    except SetupError as e:
        say(f"cannot run the benchmark: {e}")
        meta["fatal"] = str(e)
        code = EXIT_SETUP
    meta["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if rows:
        print(render_rows(meta, rows))
    if args.json:
        args.json.write_text(json.dumps(rows_json(meta, rows), indent=2) + "\n")
    return code
