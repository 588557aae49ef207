"""One big log, several processes: the file is cut at line breaks into one range per core;
forked workers read all but the first range while this process reads the first, and the
ranges' records are joined in file order with their line numbers shifted.

Only for formats read through a compiled layout (:mod:`llmb.results.fast`): their parsers
keep no state across lines but the progress counter, so a range read on its own yields what
the whole file read in order would. And only once a probe of the file's start has settled the
format (not by reaching the probe's end), so every range is read with the parser a
sequential read would have chosen. Anything unexpected (no ``fork``, a worker that dies or
reports an error) falls back to reading the file in one process: same result, slower.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from operator import add
from typing import Any, BinaryIO

from llmb.results.parsers.base import FastLayout, Parser
from llmb.results.reader import FileRange, ScanState
from llmb.results.record import Columns, joined
from llmb.results.stream import LogStream

#: below this many bytes per worker, forking costs more than it saves
MIN_BYTES_PER_WORKER = 48 << 20
PROBE_BYTES = 1 << 20
MAX_WORKERS = 8
#: This process reads a range 5 % longer than each worker's: a worker's columns still have
#: to be pickled, sent and unpickled when it is done (1 GB on two cores, equal ranges: the
#: first one ended 0.1 s before the second one's columns were in; 10 % longer: 0.05 s after)
FIRST_SHARE = 1.05
#: the pipe a worker's columns come through (F_SETPIPE_SZ; the default 64 KB pipe makes 25 MB
#: of columns a few hundred round trips)
PIPE_BYTES = 1 << 20


class Fallback(Exception):
    """The split read could not be completed: read the file in one process instead."""


def workers_for(size: int) -> int:
    """How many processes a log of ``size`` bytes is read with (``LLMB_PARSE_WORKERS`` caps
    it; 1 turns splitting off)."""
    if not hasattr(os, "fork") or sys.platform == "win32":
        return 1
    cap = os.environ.get("LLMB_PARSE_WORKERS", "")
    limit = int(cap) if cap.isdigit() and int(cap) > 0 else min(os.cpu_count() or 1, MAX_WORKERS)
    return max(1, min(limit, size // MIN_BYTES_PER_WORKER))


def boundaries(fh: BinaryIO, size: int, parts: int, first_share: float = 1.0) -> list[int] | None:
    """``parts + 1`` offsets from 0 to ``size``, each inner one just after a line break; the
    first range ``first_share`` times as long as each other one."""
    cuts = [0]
    unit = size / (parts - 1 + first_share) if parts > 1 else size
    for i in range(1, parts):
        fh.seek(max(int((i - 1 + first_share) * unit), cuts[-1] + PROBE_BYTES))
        window = fh.read(1 << 20)
        k = window.find(b"\n")
        if k < 0:
            return None
        cut = fh.tell() - len(window) + k + 1
        if cut >= size:
            break
        cuts.append(cut)
    cuts.append(size)
    return cuts


@dataclass
class _Part:
    """What one range gave: its records' columns (line numbers relative to the range's
    start), its parser's progress and its counters."""

    columns: Columns
    progress: dict[int | None, tuple[int, int]]
    malformed: int
    first_error_at: tuple[int, str] | None
    lines: int
    bytes: int
    ended_with_newline: bool


def _read_range(path: str, start: int, end: int, fmt: str, layout: FastLayout) -> _Part:
    with open(path, "rb") as fh:
        stream = LogStream(FileRange(fh, start, end), fmt, layout=layout)  # type: ignore[arg-type]
        batches = list(stream.column_batches())
    assert stream.parser is not None
    return _Part(joined(batches) if batches else [], stream.parser.progress, stream.malformed,
                 stream.first_error_at, stream.state.lines, stream.state.bytes, stream.state.ended_with_newline)


def fork(fn: Callable[..., Any], *args: Any) -> tuple[int, int]:
    """Run ``fn(*args)`` in a forked worker; returns (pid, read end of the pipe its pickled
    result comes back through). :func:`collect` waits for it."""
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default pipe works too
    pid = os.fork()
    if pid == 0:  # the worker: compute, send, exit without running the parent's cleanup
        code = 0
        try:
            os.close(r)
            payload = pickle.dumps(fn(*args), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which falls back
            payload = pickle.dumps(_Failed(f"{exc.__class__.__name__}: {exc}"))
            code = 1
        try:
            with os.fdopen(w, "wb") as out:
                out.write(payload)
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


@dataclass(frozen=True)
class _Failed:
    why: str


def collect(pid: int, fd: int) -> Any:
    """The result of a worker started by :func:`fork`; :class:`Fallback` if it failed."""
    with os.fdopen(fd, "rb") as fh:
        payload = fh.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not payload:
        raise Fallback(f"a worker failed (status {status})")
    result = pickle.loads(payload)
    if isinstance(result, _Failed):
        raise Fallback(f"a worker failed: {result.why}")
    return result


def reap(started: list[tuple[int, int]]) -> None:
    """Stop and wait for workers whose results are no longer wanted."""
    for pid, fd in started:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except OSError:
            pass
        os.close(fd)


def map_ranges(path: str, fh: BinaryIO, cuts: list[int], fn: Callable[[BinaryIO], Any]) -> list[Any]:
    """``fn`` applied to each range ``[cuts[i], cuts[i + 1])`` of the file, the first in this
    process and the others in forked workers, in file order."""
    started = [fork(_on_range, path, a, b, fn) for a, b in zip(cuts[1:-1], cuts[2:])]
    try:
        results = [fn(FileRange(fh, cuts[0], cuts[1]))]  # type: ignore[arg-type]
        while started:
            results.append(collect(*started.pop(0)))
        return results
    finally:
        reap(started)


def _on_range(path: str, start: int, end: int, fn: Callable[[BinaryIO], Any]) -> Any:
    with open(path, "rb") as fh:
        return fn(FileRange(fh, start, end))  # type: ignore[arg-type]


class SplitStream:
    """The interface of :class:`llmb.results.parse.LogStream` that ``_parse`` reads, over a
    file read in ranges by several processes."""

    def __init__(self, path: str, fh: BinaryIO, size: int, workers: int, fmt: str | None):
        probe = LogStream(FileRange(fh, 0, min(size, PROBE_BYTES)), fmt)  # type: ignore[arg-type]
        for _ in probe.batches():
            pass
        if probe.parser is None or probe.decided_at_eof or probe.layout is None:
            raise Fallback("the format or its layout was not settled by the probe")
        cuts = boundaries(fh, size, workers, FIRST_SHARE)
        if cuts is None or len(cuts) < 3:
            raise Fallback("no line breaks to cut the file at")
        self.path, self.cuts, self.fmt, self.layout = path, cuts, probe.parser.name, probe.layout
        self.first = LogStream(FileRange(fh, 0, cuts[1]), fmt)  # type: ignore[arg-type]
        self.state = ScanState(pattern=self.first.state.pattern)
        self.malformed = 0
        self.first_error_at: tuple[int, str] | None = None

    @property
    def parser(self) -> Parser | None:
        return self.first.parser

    @property
    def first_error(self) -> str | None:
        return f"line {self.first_error_at[0]}: {self.first_error_at[1]}" if self.first_error_at else None

    def column_batches(self) -> Iterator[Columns]:
        started = [fork(_read_range, self.path, a, b, self.fmt, self.layout)
                   for a, b in zip(self.cuts[1:-1], self.cuts[2:])]
        try:
            yield from self.first.column_batches()
            if self.first.parser is None or self.first.parser.name != self.fmt:
                raise Fallback("the first range settled on another format")
            first = self.first
            self.malformed, self.first_error_at = first.malformed, first.first_error_at
            offset, nbytes = first.state.lines, first.state.bytes  # the range ends at a line break
            ended = first.state.ended_with_newline
            progress = self.first.parser.progress
            while started:
                part = collect(*started.pop(0))
                if part.columns:
                    cols = part.columns
                    cols[1] = list(map(add, cols[1], repeat(offset))) if isinstance(cols[1], list) else cols[1] + offset
                    yield cols
                progress.update(part.progress)
                self.malformed += part.malformed
                if self.first_error_at is None and part.first_error_at is not None:
                    self.first_error_at = (part.first_error_at[0] + offset, part.first_error_at[1])
                offset += part.lines
                nbytes += part.bytes
                ended = part.ended_with_newline
            self.state.lines, self.state.bytes, self.state.ended_with_newline = offset, nbytes, ended
        finally:
            reap(started)  # interrupted or failed: take the rest back
