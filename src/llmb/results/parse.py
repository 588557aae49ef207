"""Reading a log end to end: format autodetection, streaming, rank selection.

:class:`LogStream` yields every record of every rank as the file is read; :func:`parse_file`
keeps one rank's records (rank 0, else the lowest rank that logged steps, else unprefixed
lines) with each iteration once (the last occurrence wins: a restarted job logs the same
iterations again, and the newer ones are the ones that ran to the end).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from llmb.errors import LlmbError
from llmb.results.parsers import FORMATS, PARSERS, Parser
from llmb.results.parsers.mbridge import MbridgeParser
from llmb.results.reader import ScanState, clean, scan
from llmb.results.record import StepRecord

_ANY_MARKER = re.compile("|".join(p.marker.pattern for p in PARSERS.values()))
#: Lines buffered while the format is still ambiguous (a Megatron iteration line could be
#: Megatron-Bridge until a ``Step Time`` line shows up or a second iteration line does not).
_DETECT_BUFFER = 64


def check_format(fmt: str | None) -> str | None:
    if fmt is None or fmt == "auto":
        return None
    key = fmt.lower()
    if key not in PARSERS:
        raise LlmbError(f"unknown log format {fmt!r} (choose from auto, {', '.join(FORMATS)})")
    return key


def detect_line(text: str) -> str | None:
    """The format a single line proves, or ``None``."""
    for name, cls in PARSERS.items():
        if cls.detect.search(text):
            return name
    return None


def _decide(names: list[str], eof: bool) -> str | None:
    if "mbridge" in names:
        return "mbridge"
    first = names[0]
    if first != "megatron":
        return first
    if names.count("megatron") >= 2 or eof or len(names) >= _DETECT_BUFFER:
        return "megatron"
    return None


class LogStream:
    """Iterate the records of one open binary log, all ranks, in file order.

    After iteration: :attr:`parser` (``None`` if no known format was found), :attr:`state`
    (lines and bytes read), :attr:`malformed` (lines with a step head that could not be read)
    and :attr:`first_error`.
    """

    def __init__(self, fh: BinaryIO, fmt: str | None = None):
        self.fh = fh
        fmt = check_format(fmt)
        self.parser: Parser | None = PARSERS[fmt]() if fmt else None
        self.state = ScanState(pattern=self.parser.marker if self.parser else _ANY_MARKER)
        self.malformed = 0
        self.first_error: str | None = None

    def _choose(self, name: str) -> None:
        self.parser = PARSERS[name]()
        self.state.pattern = self.parser.marker

    def _feed(self, text: str, line_no: int, rank: int | None) -> StepRecord | None:
        assert self.parser is not None
        try:
            return self.parser.feed(text, line_no, rank)
        except (ValueError, OverflowError) as exc:
            self.malformed += 1
            if self.first_error is None:
                self.first_error = f"line {line_no}: {exc}"
            return None

    def __iter__(self) -> Iterator[StepRecord]:
        pending: list[tuple[str, int, str, int | None]] = []
        feed = self.parser.feed if self.parser is not None else None
        for line_no, segment in scan(self.fh, self.state):
            text, rank = clean(segment)
            if self.parser is None:
                name = detect_line(text)
                if name is None:
                    continue
                pending.append((name, line_no, text, rank))
                chosen = _decide([p[0] for p in pending], eof=False)
                if chosen is None:
                    continue
                self._choose(chosen)
                feed = self.parser.feed  # type: ignore[union-attr]
                for _, n, t, r in pending:
                    rec = self._feed(t, n, r)
                    if rec is not None:
                        yield rec
                pending = []
                continue
            # _feed inlined: this loop runs once per step line of multi-GB logs
            try:
                rec = feed(text, line_no, rank)
            except (ValueError, OverflowError) as exc:
                self.malformed += 1
                if self.first_error is None:
                    self.first_error = f"line {line_no}: {exc}"
                continue
            if rec is not None:
                yield rec
        if self.parser is None and pending:
            self._choose(_decide([p[0] for p in pending], eof=True) or pending[0][0])
            for _, n, t, r in pending:
                rec = self._feed(t, n, r)
                if rec is not None:
                    yield rec
        if self.parser is not None:
            yield from self.parser.finish()


@dataclass(frozen=True)
class ParsedLog:
    """One rank's steps of one log, with what the reader learned on the way."""

    path: str | None
    format: str | None
    records: tuple[StepRecord, ...]
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


def _rank_key(rank: int | None) -> float:
    # Unprefixed lines rank last: with torchrun --tee, launcher noise is unprefixed.
    return math.inf if rank is None else rank


def parse_stream(fh: BinaryIO, fmt: str | None = None, rank: int | None = None, path: str | None = None) -> ParsedLog:
    """Parse an open binary log; keep ``rank`` (default: the lowest rank that logged steps)."""
    stream = LogStream(fh, fmt)
    kept: dict[int, StepRecord] = {}
    best: float | None = None
    duplicates = 0
    ranks: set[int] = set()
    for rec in stream:
        if rec.rank is not None:
            ranks.add(rec.rank)
        if rank is not None:
            if rec.rank != rank:
                continue
        else:
            key = _rank_key(rec.rank)
            if best is None or key < best:
                # A lower rank appeared: its records are the ones to keep. (The lowest rank
                # overall is kept from its first line, so nothing of it is ever dropped.)
                best, duplicates = key, 0
                kept.clear()
            elif key > best:
                continue
        if rec.iteration in kept:
            duplicates += 1
        kept[rec.iteration] = rec
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
        records=tuple(sorted(kept.values(), key=lambda r: r.iteration)),
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
    """Parse one log file (streamed; any size)."""
    with open_log(path) as fh:
        return parse_stream(fh, fmt=fmt, rank=rank, path=str(path))


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
