"""Restoring a custom-format dump while it is being staged, its big tables split across the jobs.

`pg_restore -j N` of a staged file waits for the whole download, loads each table in one COPY (the biggest one sets
the pace, one core busy) and builds a table's indexes only once its one COPY is done. Here the dump is loaded as it
is staged: as soon as its TOC has arrived the schema is created; as the data arrives it is cut, at row boundaries,
into pieces of some tens of MiB, each loaded by a `pg_restore -L` of its own that reads the TOC and that piece
from a socket, up to N at a time (several pieces of one table load side by side); once all of a table's data is in,
its rows are counted and the indexes and constraints that need only that table are built, while the other
tables load. What needs several tables (foreign keys, ...) and everything pg_restore restores after the data is
left to one `pg_restore -j N` of the staged file at the end.

The cutting is pgbackup.runner.restore.pieces. A dump it cannot cut (large objects, INSERT statements, data
compressed by pg_dump, offsets already set) is restored from the staged file by `pg_restore -j N`: `classic`.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pgbackup.runner.common.writes import write_all
from pgbackup.runner.postgres.archive_toc import OFFSET_NOT_SET, SECTION_POST_DATA, SECTION_PRE_DATA, TocEntry
from pgbackup.runner.restore.dump_offsets import BLOCK_END, ZeroRuns
from pgbackup.runner.restore.pieces import DumpCutter, Layout, LayoutUnexpected, Piece

MIN_PIECE = 16 * 1024 * 1024
SOCKET_BUFFER = 4 * 1024 * 1024
"""Asked for the socket feeding a pg_restore run; the kernel caps it at net.core.wmem_max."""
PIECES_PER_JOB = 8
"""A dump is cut into about this many pieces per job: enough that the jobs end together, few enough that starting
a pg_restore for each costs nothing."""


class PgRestoreFailed(Exception):
    """One of the pg_restore runs failed; its exit status and what it said."""

    def __init__(self, returncode: int, stderr: str) -> None:
        super().__init__(f"pg_restore exited with status {returncode}")
        self.returncode = returncode
        self.stderr = stderr


@dataclass
class _Table:
    entry: TocEntry
    pieces_left: int = 0
    staged: bool = False
    """All of its data block has been staged (and cut into pieces)."""
    settled: bool = False
    """Counted and given its indexes (its table task was queued)."""


class ParallelLoad:
    """`attach` it to the staged file and feed it every chunk once written there (`feed`, in the staging writer's
    thread); `jobs` lanes run the pg_restore work as it becomes possible. `finish` once the file is staged and
    verified: what is left of the dump, and the tables' row counts. `close` always: it stops whatever still runs."""

    def __init__(self, scratch: Path, size: int, jobs: int, pg_restore: Sequence[str], env: Mapping[str, str],
                 count: Callable[[str, str], int]) -> None:
        self._path = Path()
        self._jobs = jobs
        self._pg_restore = list(pg_restore)
        self._env = dict(env)
        self._count = count
        self._cutter = DumpCutter(max(MIN_PIECE, size // (jobs * PIECES_PER_JOB)))
        self._lists = Path(tempfile.mkdtemp(prefix="pgbackup-lists-", dir=scratch))
        self._changed = threading.Condition()
        self._layout: Layout | None = None
        self._fd = -1
        self._tables: dict[int, _Table] = {}
        self._early_post: dict[int, list[int]] = {}
        self._tasks: deque[Callable[[], None]] = deque()
        self._running = 0
        self._schema_due = False
        self._schema_created = False
        self._closing = False
        self._stopped = False
        self._error: BaseException | None = None
        self._processes: set[subprocess.Popen[bytes]] = set()
        self.counts: dict[str, int] = {}
        self.pieces = 0
        self._lanes = [threading.Thread(target=self._lane, name=f"restore-lane-{n}", daemon=True) for n in range(jobs)]
        for lane in self._lanes:
            lane.start()

    @property
    def runs(self) -> ZeroRuns:
        """The staged file's runs of zero bytes (for dump_offsets, when the file is restored the classic way)."""
        return self._cutter.runs

    @property
    def classic(self) -> bool:
        """The dump cannot be cut (see pgbackup.runner.restore.pieces), or its TOC never arrived: restore the
        staged file with pg_restore -j."""
        return self._cutter.layout is None

    @property
    def reason(self) -> str:
        """Why it is `classic`."""
        return self._cutter.unusable or "its table of contents did not arrive"

    @property
    def started(self) -> bool:
        """Something was restored already: the restore cannot start over another way."""
        with self._changed:
            return self._schema_created or self._running > 0

    def attach(self, path: Path) -> None:
        """The file being staged (created, still empty)."""
        self._path = path
        self._cutter.attach(path)

    # -- the staging writer's thread -------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        with self._changed:
            if self._error is not None:
                raise self._error  # stops the staging: nothing more to load
        try:
            pieces, staged = self._cutter.feed(chunk)
        except LayoutUnexpected as exc:
            with self._changed:
                self._error = exc
                self._changed.notify_all()
            raise
        with self._changed:
            if self._layout is None and self._cutter.layout is not None:
                self._plan(self._cutter.layout)
            for piece in pieces:
                self._tables[piece.entry.dump_id].pieces_left += 1
                self.pieces += 1
                self._tasks.append(functools.partial(self._load, piece))
            for entry in staged:
                self._tables[entry.dump_id].staged = True
                self._settle_if_loaded(self._tables[entry.dump_id])
            self._changed.notify_all()

    def _plan(self, layout: Layout) -> None:
        """The tables to load, and which post-data items need only one of them (built once it is loaded)."""
        self._layout = layout
        self._fd = os.open(self._path, os.O_RDONLY)
        entries = layout.toc.entries
        by_id = {e.dump_id: e for e in entries}
        before_data = {e.dump_id for e in entries if e.section == SECTION_PRE_DATA}
        table_of: dict[int, int] = {}
        for entry in entries:
            if entry.data_state == OFFSET_NOT_SET:
                self._tables[entry.dump_id] = _Table(entry)
                self._listing(f"data-{entry.dump_id}", [entry.dump_id])
                owners = [d for d in entry.dependencies if d in by_id and by_id[d].desc == "TABLE"]
                if len(owners) == 1:
                    table_of[owners[0]] = entry.dump_id
        for entry in entries:
            tables = [d for d in entry.dependencies if d in table_of]
            others = [d for d in entry.dependencies if d not in table_of]
            if entry.section == SECTION_POST_DATA and len(tables) == 1 and all(d in before_data for d in others):
                self._early_post.setdefault(table_of[tables[0]], []).append(entry.dump_id)
        for table_data, ids in self._early_post.items():
            self._listing(f"post-{table_data}", ids)
        self._schema_due = True

    # -- the lanes ---------------------------------------------------------------------------------------------------

    def _lane(self) -> None:
        while True:
            with self._changed:
                while (task := self._next_task()) is None:
                    if self._stopped or self._error is not None or (
                            self._closing and not self._tasks and self._running == 0):
                        return
                    self._changed.wait()
                self._running += 1
            try:
                task()
            except BaseException as exc:  # handed to feed() and finish(), which raise it
                with self._changed:
                    if self._error is None:
                        self._error = exc
                    self._stopped = True
            finally:
                with self._changed:
                    self._running -= 1
                    self._changed.notify_all()

    def _next_task(self) -> Callable[[], None] | None:
        """The next thing to run: the schema first, alone; then the queue, in order."""
        if self._error is not None or self._stopped:
            return None
        if not self._schema_created:
            if self._schema_due and self._running == 0:
                self._schema_due = False
                return self._create_schema
            return None
        return self._tasks.popleft() if self._tasks else None

    def _create_schema(self) -> None:
        self._restore(["--section=pre-data"], self._head_only)
        with self._changed:
            self._schema_created = True

    def _load(self, piece: Piece) -> None:
        def feed(into: int) -> None:
            write_all(into, self._head() + piece.header)
            position = piece.start
            while position < piece.end:
                position += os.sendfile(into, self._fd, position, piece.end - position)
            write_all(into, BLOCK_END)

        self._restore(["-L", str(self._lists / f"data-{piece.entry.dump_id}")], feed)
        with self._changed:
            table = self._tables[piece.entry.dump_id]
            table.pieces_left -= 1
            self._settle_if_loaded(table)

    def _settle_if_loaded(self, table: _Table) -> None:
        if table.staged and table.pieces_left == 0 and not table.settled:
            table.settled = True
            self._tasks.appendleft(functools.partial(self._settle, table.entry))  # indexes first: the longest wait
            self._changed.notify_all()

    def _settle(self, entry: TocEntry) -> None:
        """A table whose data is all in: count its rows, build the indexes and constraints on it alone."""
        rows = self._count(entry.namespace, entry.tag)
        with self._changed:
            self.counts[f"{entry.namespace}.{entry.tag}"] = rows
        early = self._early_post.get(entry.dump_id)
        if early:
            self._restore(["-L", str(self._lists / f"post-{entry.dump_id}")], self._head_only)

    def _head(self) -> bytes:
        assert self._layout is not None
        return self._layout.head

    def _head_only(self, into: int) -> None:
        write_all(into, self._head())

    def _listing(self, name: str, ids: Sequence[int]) -> Path:
        """A pg_restore -L list, written once (lanes read it side by side)."""
        path = self._lists / name
        path.write_text("".join(f"{dump_id}\n" for dump_id in ids))
        return path

    def _restore(self, args: Sequence[str], feed: Callable[[int], None], source: str | None = None) -> None:
        """One pg_restore run reading the dump from a socket that `feed` writes (or `source`, a file); raises
        PgRestoreFailed.

        A socket, not a pipe: pg_restore reads its input 4 KiB at a time, and a writer blocked on a full pipe is woken
        for every page read (as many context switches as reads, 140,000 for a 950 MB dump); a stream socket wakes
        it once a quarter of its buffer is free."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with tempfile.TemporaryFile(dir=self._lists) as said, ours:
            with theirs:
                ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
                process = subprocess.Popen([*self._pg_restore, *args, *([source] if source else [])], env=self._env,
                                           stdin=subprocess.DEVNULL if source else theirs.fileno(),
                                           stdout=subprocess.DEVNULL, stderr=said)
            with self._changed:
                self._processes.add(process)
                if self._stopped:
                    process.terminate()
            try:
                if not source:
                    try:
                        feed(ours.fileno())
                        ours.shutdown(socket.SHUT_WR)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # it stopped reading: its exit status says why
                returncode = process.wait()
            finally:
                with self._changed:
                    self._processes.discard(process)
            if returncode != 0:
                said.seek(0)
                raise PgRestoreFailed(returncode, said.read().decode("utf-8", "replace"))

    # -- the caller's thread -----------------------------------------------------------------------------------------

    def finish(self, size: int) -> dict[str, int]:
        """Once the file is staged (all `size` bytes) and verified: wait for the lanes, then restore the rest of
        the post-data with `pg_restore -j jobs` of the file. The row counts of the tables loaded here."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        for lane in self._lanes:
            lane.join()
        if self._error is not None:
            raise self._error
        self._cutter.check_end(size)
        assert self._layout is not None
        settled = {d for ids in self._early_post.values() for d in ids} | set(self._tables)
        rest = [e.dump_id for e in self._layout.toc.entries if e.dump_id not in settled]
        self._restore(["--section=data", "--section=post-data", "-j", str(self._jobs), "-L",
                       str(self._listing("rest", rest))], self._head_only, source=str(self._path))
        return dict(self.counts)

    def close(self) -> None:
        """Stop: no new work, the running pg_restore runs are ended (their database is dropped by the caller)."""
        with self._changed:
            self._stopped = True
            for process in self._processes:
                process.terminate()
            self._changed.notify_all()
        for lane in self._lanes:
            lane.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._cutter.close()
        shutil.rmtree(self._lists, ignore_errors=True)
