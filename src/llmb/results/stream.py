"""A log as a stream of step records: format autodetection, then the parser's compiled
layout chunk by chunk (:mod:`llmb.results.fast`) or its line-by-line reading."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

from llmb.errors import LlmbError
from llmb.results.fast import read_columns
from llmb.results.parsers import FORMATS, PARSERS, Parser
from llmb.results.parsers.base import FastLayout
from llmb.results.reader import Decoder, ScanState, chunks, clean, segments
from llmb.results.record import Columns, StepRecord, columns_of, records_of

_ANY_MARKER = re.compile("|".join(p.marker.pattern for p in PARSERS.values()))
#: Lines buffered while the format is still ambiguous (a Megatron iteration line could be
#: Megatron-Bridge until a ``Step Time`` line shows up or a second iteration line does not).
_DETECT_BUFFER = 64
#: chunks offered to a parser to learn its fast layout from before it is given up on
_LAYOUT_TRIES = 3


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

    def __init__(self, fh: BinaryIO, fmt: str | None = None, fast: bool = True, layout: FastLayout | None = None):
        self.fh = fh
        self.fast = fast  # False: line by line throughout (the reference the fast path is tested against)
        fmt = check_format(fmt)
        self.parser: Parser | None = PARSERS[fmt]() if fmt else None
        self.state = ScanState(pattern=self.parser.marker if self.parser else _ANY_MARKER)
        self.malformed = 0
        self.first_error_at: tuple[int, str] | None = None  # (line, what was wrong)
        self.decided_at_eof = False  # the format was only chosen at the end of the input
        self._pending: list[tuple[str, int, str, int | None]] = []
        self._layout: FastLayout | None = layout if fast else None
        self._tries = 0  # chunks whose last step line was offered to parser.layout()
        self.fast_chunks = 0  # chunks read through the compiled layout (llmb.results.fast)
        self._misses = 0  # chunks the layout gave up on

    @property
    def layout(self) -> FastLayout | None:
        """The compiled step-line layout the fast path reads with, once learned."""
        return self._layout

    @property
    def first_error(self) -> str | None:
        return f"line {self.first_error_at[0]}: {self.first_error_at[1]}" if self.first_error_at else None

    def _choose(self, name: str) -> None:
        self.parser = PARSERS[name]()
        self.state.pattern = self.parser.marker

    def _feed(self, text: str, line_no: int, rank: int | None) -> StepRecord | None:
        assert self.parser is not None
        try:
            return self.parser.feed(text, line_no, rank)
        except (ValueError, OverflowError) as exc:
            self.malformed += 1
            if self.first_error_at is None:
                self.first_error_at = (line_no, str(exc))
            return None

    def __iter__(self) -> Iterator[StepRecord]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[StepRecord]]:
        """The records chunk by chunk: through the parser's compiled layout where it has one
        (:mod:`llmb.results.fast`), else line by line."""
        for batch in self._batches():
            yield batch if isinstance(batch, list) else records_of(batch)

    def column_batches(self) -> Iterator[Columns]:
        """:meth:`batches` as columns (one list per :class:`StepRecord` field, ``None`` for a
        field no record of the batch has), built as such by the fast path: what a big log is
        kept as until its records are read (:class:`~llmb.results.record.StepRecords`)."""
        for batch in self._batches():
            if not isinstance(batch, list):
                yield list(batch)
            elif batch:
                yield columns_of(batch)

    def _batches(self) -> Iterator[list[StepRecord] | tuple[list, ...]]:
        """Record lists (read line by line) or tuples of columns (the fast path)."""
        decode = Decoder()
        for line_no, chunk in chunks(self.fh, self.state):
            if self._layout is not None and not decode.pending:
                got = read_columns(self._layout, chunk, line_no)
                if got is not None:
                    cols, last, self.state.chunk_newlines = got
                    self.fast_chunks += 1
                    if last:
                        self._progress(last)
                        yield tuple(cols)
                    continue
                self._misses += 1
                if self._misses > 4 + self.fast_chunks // 4:
                    self._layout = None  # this log keeps leaving the layout: stop trying
                    self._tries = _LAYOUT_TRIES
            batch = list(self._lines(decode(chunk), line_no))
            if batch:
                yield batch
        if self.parser is None and self._pending:
            pending, self._pending = self._pending, []
            self.decided_at_eof = True
            self._choose(_decide([p[0] for p in pending], eof=True) or pending[0][0])
            yield [rec for _, n, t, r in pending if (rec := self._feed(t, n, r)) is not None]
        if self.parser is not None:
            yield list(self.parser.finish())

    def _progress(self, last: dict[int | None, tuple[int, int]]) -> None:
        progress_of = self.parser.progress_of  # type: ignore[union-attr]
        self.parser.progress.update({rank: progress_of(it, plan) for rank, (it, plan) in last.items()})  # type: ignore[union-attr]

    def _lines(self, body: str, line_no: int) -> Iterator[StepRecord]:
        sample = None
        for line_no, segment in segments(body, line_no, self.state):
            text, rank = clean(segment)
            if self.parser is None:
                name = detect_line(text)
                if name is None:
                    continue
                self._pending.append((name, line_no, text, rank))
                chosen = _decide([p[0] for p in self._pending], eof=False)
                if chosen is None:
                    continue
                self._choose(chosen)
                pending, self._pending = self._pending, []
                for _, n, t, r in pending:
                    rec = self._feed(t, n, r)
                    if rec is not None:
                        sample = t
                        yield rec
                continue
            rec = self._feed(text, line_no, rank)
            if rec is not None:
                sample = text
                yield rec
        if sample is not None and self.fast and self._layout is None and self._tries < _LAYOUT_TRIES:
            self._tries += 1
            self._layout = self.parser.layout(sample)  # type: ignore[union-attr]
