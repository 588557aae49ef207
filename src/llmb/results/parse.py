"""Reading a log end to end: format autodetection, streaming, rank selection.

:class:`~llmb.results.stream.LogStream` yields every record of every rank as the file is read;
:func:`parse_file` keeps one rank's records (rank 0, else the lowest rank that logged steps,
else unprefixed lines) with each iteration once (the last occurrence wins: a restarted job
logs the same iterations again, and the newer ones are the ones that ran to the end).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from operator import attrgetter, lt
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from llmb.errors import LlmbError
from llmb.results.parsers.mbridge import MbridgeParser
from llmb.results.record import Columns, StepRecord, StepRecords, gc_paused, joined, records_of
from llmb.results.reader import FileRange
from llmb.results.stream import LogStream, check_format, detect_line

if TYPE_CHECKING:
    from llmb.results.split import SplitStream

__all__ = ["LogStream", "ParsedLog", "check_format", "detect_line", "log_files", "open_log", "parse_file",
           "parse_stream"]


@dataclass(frozen=True)
class ParsedLog:
    """One rank's steps of one log, with what the reader learned on the way."""

    path: str | None
    format: str | None
    records: StepRecords
    rank: int | None = None
    ranks: tuple[int, ...] = ()
    iteration_base: int | None = None
    #: (steps done, steps planned) from the selected rank's last progress counter
    progress: tuple[int, int] | None = None
    lines: int = 0
    bytes: int = 0
    malformed: int = 0
    duplicates: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def final_reached(self) -> bool | None:
        """Whether the log shows the planned last step; ``None`` if the format does not say."""
        if self.progress is None:
            return None
        done, planned = self.progress
        return done >= planned

    @property
    def planned_steps(self) -> int | None:
        return self.progress[1] if self.progress else None


_ITERATION = attrgetter("iteration")


def _rank_key(rank: int | None) -> float:
    # Unprefixed lines rank last: with torchrun --tee, launcher noise is unprefixed.
    return math.inf if rank is None else rank


def parse_stream(fh: BinaryIO, fmt: str | None = None, rank: int | None = None, path: str | None = None,
                 fast: bool = True) -> ParsedLog:
    """Parse an open binary log; keep ``rank`` (default: the lowest rank that logged steps).
    ``fast=False`` reads every chunk line by line (slower; the same result)."""
    stream = LogStream(fh, fmt, fast=fast)
    with gc_paused():
        return _parse(stream, rank, path)


def _in_order(kept: dict[int, StepRecord]) -> tuple[StepRecord, ...]:
    """The kept records by iteration: as inserted when that already is the order, else sorted."""
    its = list(kept)
    if all(map(lt, its, islice(its, 1, None))):
        return tuple(kept.values())
    return tuple(sorted(kept.values(), key=_ITERATION))


def _increasing(its: Sequence[int]) -> bool:
    """Whether the iterations strictly increase (a list's or a numpy array's, at C speed)."""
    if not isinstance(its, list):
        return bool((its[1:] > its[:-1]).all())
    return all(map(lt, its, islice(its, 1, None)))


class _Kept:
    """One rank's records, each iteration once (the last occurrence wins), by iteration.

    While the batches' iterations increase, within each and from one to the next (a log's
    usual case, checked at C speed), the batches are kept as the columns they came as: no
    record is built or looked up here. The first one out of order (a restart logs iterations
    again) turns what was kept into a dict by iteration."""

    def __init__(self) -> None:
        self.parts: list[Columns] = []
        self.last: int | None = None
        self.by_iteration: dict[int, StepRecord] | None = None
        self.duplicates = 0

    def add(self, columns: Columns) -> None:
        its = columns[0]
        if self.by_iteration is None:
            first, last = int(its[0]), int(its[-1])
            if (self.last is None or first > self.last) and _increasing(its):
                self.parts.append(columns)
                self.last = last
                return
            self._to_dict()
        self.update(records_of(columns))

    def update(self, records: list[StepRecord]) -> None:
        if self.by_iteration is None:
            self._to_dict()
        assert self.by_iteration is not None
        before = len(self.by_iteration)
        self.by_iteration.update(zip(map(_ITERATION, records), records))
        self.duplicates += before + len(records) - len(self.by_iteration)

    def _to_dict(self) -> None:
        records = records_of(joined(self.parts)) if self.parts else []
        self.by_iteration = dict(zip(map(_ITERATION, records), records))
        self.parts = []

    def __bool__(self) -> bool:
        return bool(self.parts or self.by_iteration)

    def records(self) -> StepRecords:
        if self.by_iteration is not None:
            return StepRecords(_in_order(self.by_iteration))
        if not self.parts:
            return StepRecords()
        return StepRecords.of_columns(self.parts)


def _parse(stream: LogStream | SplitStream, rank: int | None, path: str | None) -> ParsedLog:
    kept = _Kept()
    best: float | None = None
    ranks: set[int] = set()
    for columns in stream.column_batches():
        in_batch = {None} if columns[-1] is None else set(columns[-1])
        ranks |= in_batch - {None}
        if len(in_batch) == 1:  # the usual case: one rank logs the steps; kept in bulk
            (only,) = in_batch
            if rank is not None:
                if only != rank:
                    continue
            else:
                key = _rank_key(only)
                if best is None or key < best:
                    best = key
                    kept = _Kept()
                elif key > best:
                    continue
            kept.add(columns)
            continue
        batch: list[StepRecord] = []
        for rec in records_of(columns):
            if rank is not None:
                if rec.rank != rank:
                    continue
            else:
                key = _rank_key(rec.rank)
                if best is None or key < best:
                    # A lower rank appeared: its records are the ones to keep. (The lowest rank
                    # overall is kept from its first line, so nothing of it is ever dropped.)
                    best = key
                    kept, batch = _Kept(), []
                elif key > best:
                    continue
            batch.append(rec)
        if batch:
            kept.update(batch)
    duplicates = kept.duplicates
    parser = stream.parser
    chosen = rank if rank is not None else (None if best in (None, math.inf) else int(best))
    notes: list[str] = []
    if parser is None:
        notes.append("no step lines of any known format")
    if stream.malformed:
        notes.append(f"{stream.malformed} step line(s) could not be read (first: {stream.first_error})")
    if isinstance(parser, MbridgeParser) and parser.unpaired:
        notes.append(f"{parser.unpaired} 'Step Time' line(s) had no iteration line to pair with: counted in order, "
                     "numbered on from the last iteration line")
    if duplicates:
        notes.append(f"{duplicates} iteration(s) logged more than once; the last occurrence is kept")
    if rank is not None and not kept and ranks:
        notes.append(f"rank {rank} logged no steps (ranks seen: {', '.join(map(str, sorted(ranks)))})")
    progress = parser.progress.get(chosen) if parser is not None else None
    return ParsedLog(
        path=path,
        format=parser.name if parser else None,
        records=kept.records(),
        rank=chosen,
        ranks=tuple(sorted(ranks)),
        iteration_base=parser.iteration_base if parser else None,
        progress=progress,
        lines=stream.state.lines,
        bytes=stream.state.bytes,
        malformed=stream.malformed,
        duplicates=duplicates,
        notes=tuple(notes),
    )


def open_log(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a log for binary reading; a missing or unreadable file is a user mistake."""
    p = Path(path)
    if p.is_dir():
        raise LlmbError(f"{p} is a folder, not a log file")
    try:
        return open(p, "rb")
    except FileNotFoundError:
        raise LlmbError(f"no such log file: {p}") from None
    except OSError as exc:
        raise LlmbError(f"cannot read {p}: {exc.strerror or exc}") from None


def parse_file(path: str | os.PathLike[str], fmt: str | None = None, rank: int | None = None) -> ParsedLog:
    """Parse one log file (streamed; any size). A big one is read by one process per core
    (:mod:`llmb.results.split`), with the same result."""
    from llmb.results.split import Fallback, SplitStream, workers_for

    fmt = check_format(fmt)
    with open_log(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        workers = workers_for(size)
        if workers > 1:
            try:
                with gc_paused():
                    return _parse(SplitStream(str(path), fh, size, workers, fmt), rank, str(path))
            except Fallback:
                pass
        return parse_stream(FileRange(fh, 0, size), fmt=fmt, rank=rank, path=str(path))  # type: ignore[arg-type]


LOG_SUFFIXES = (".log", ".out", ".err", ".txt")


def log_files(paths: list[str] | list[Path]) -> list[Path]:
    """Files named on the command line, and the log files (``*.log``, ``*.out``, ``*.err``,
    ``*.txt``) under any folder named there, in a stable order."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            inside = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in LOG_SUFFIXES)
            if not inside:
                raise LlmbError(f"no log files (*{', *'.join(LOG_SUFFIXES)}) under {p}")
            found.extend(inside)
        elif p.exists():
            found.append(p)
        else:
            raise LlmbError(f"no such log file or folder: {p}")
    return found
