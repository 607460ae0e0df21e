"""Client programs run as child processes: one whose stdout is streamed (ChildOutput: pg_dump, pg_basebackup,
tar into the upload pipeline) and two piped into each other (run_pipe: pg_dump | pg_restore)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from io import BufferedReader
from typing import IO, cast

from pgbackup.runner.common.config import CHUNK
from pgbackup.runner.common.errors import RunnerError, program_ended
from pgbackup.runner.common.log import redact_values


class ChildOutput:
    """The stdout of a client program (pg_dump, pg_basebackup, tar) as an iterable of chunks.

    Iteration raises RunnerError when the program exits non-zero or is killed, so a pipeline consuming it
    aborts its upload instead of committing a truncated object. stderr is kept (last lines) for the error.
    """

    def __init__(self, args: list[str], *, env: Mapping[str, str], what: str, hint: str = "",
                 cwd: str | None = None, scrub: tuple[str, ...] = ()) -> None:
        self.args = args
        self.what = what
        self.hint = hint
        self._scrub = tuple(s for s in scrub if s)
        self._stderr: list[str] = []
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(env), cwd=cwd)
        self._stderr_thread = threading.Thread(target=self._collect_stderr, daemon=True)
        self._stderr_thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _collect_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self._stderr.append(redact_values(line, self._scrub))
            del self._stderr[:-40]

    def stderr_text(self) -> str:
        self._stderr_thread.join(timeout=5)
        return "\n".join(self._stderr)

    def __iter__(self) -> Iterator[bytes]:
        assert self.proc.stdout is not None
        read = cast(BufferedReader, self.proc.stdout).read1  # what the pipe holds now: stream as the program writes
        while True:
            chunk = read(CHUNK)
            if not chunk:
                break
            yield chunk
        self.check()

    def check(self) -> None:
        """Wait for the program; raise when it failed."""
        returncode = self.proc.wait()
        if returncode == 0:
            return
        message = f"{self.what} {program_ended(returncode, self.stderr_text(), tail=1000)}"
        if self.hint and returncode > 0:  # a killed program says nothing about the server or the role's rights
            message += f". {self.hint}"
        raise RunnerError(message, reason="DumpFailed")

    def close(self) -> None:
        """Stop the program if it still runs (e.g. the upload failed) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ChildOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_STDERR_TAIL = 64 * 1024
"""Bytes of each program's stderr kept for the error message (the rest is read and dropped)."""


@dataclass(frozen=True)
class PipeResult:
    producer_code: int
    producer_stderr: str
    """The last _STDERR_TAIL bytes."""
    consumer_code: int
    consumer_stderr: str


class _StderrTail(threading.Thread):
    """Reads a child's stderr to its end while the child runs (a full pipe would block it), keeping the tail."""

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.tail = bytearray()

    def run(self) -> None:
        with self.pipe:
            while chunk := cast(BufferedReader, self.pipe).read1(1 << 16):
                self.tail += chunk
                del self.tail[:-_STDERR_TAIL]

    def text(self) -> str:
        self.join()
        return self.tail.decode(errors="replace")


def run_pipe(producer: Sequence[str], consumer: Sequence[str], *, producer_env: Mapping[str, str],
             consumer_env: Mapping[str, str]) -> PipeResult:
    """`producer | consumer` (pg_dump | pg_restore), with the exit code and stderr (tail) of both. Both stderr
    pipes are drained while the programs run, so neither blocks on a full pipe (pg_dump warning about many
    objects while pg_restore waits for its input would otherwise hang for ever). When the consumer exits early,
    the producer gets SIGPIPE on its next write and ends."""
    first = subprocess.Popen(list(producer), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=dict(producer_env))
    second: subprocess.Popen[bytes] | None = None
    try:
        assert first.stdout is not None and first.stderr is not None
        first_err = _StderrTail(first.stderr)
        first_err.start()
        second = subprocess.Popen(list(consumer), stdin=first.stdout, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=dict(consumer_env))
        first.stdout.close()  # the consumer holds the read end now: its exit ends the producer's writes
        assert second.stderr is not None
        second_err = _StderrTail(second.stderr)
        second_err.start()
        second_code = second.wait()
        first_code = first.wait()
        return PipeResult(first_code, first_err.text(), second_code, second_err.text())
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:  # interrupted (an exception, a signal): stop them
                proc.kill()
                proc.wait()
