"""Streaming candidate lines out of a log of any size.

A log is read in binary chunks and decoded incrementally (UTF-8, bad bytes replaced), so a
multi-GB file never sits in memory and a multibyte character split across two chunks is not
mangled. Rather than splitting every line in Python, the reader searches each chunk for a
*marker* (a cheap literal pattern the current parser cares about) and only cuts out the lines
that contain one; newlines in between are counted, not materialized. Lines are separated by
``\\n`` and also by ``\\r``, because progress bars (tqdm) rewrite one physical line with
carriage returns and each rewrite is a separate update.
"""

from __future__ import annotations

import codecs
import io
import mmap
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

#: small enough for a chunk and what is made of it to stay in a core's cache: a 4 MB chunk
#: made the fast path 1.5x slower
CHUNK_BYTES = 256 << 10
#: the first read of a log is smaller: its format and step-line layout are learned from it
#: line by line, and everything after goes the fast way (llmb.results.fast)
FIRST_CHUNK_BYTES = 64 << 10
#: A run of text this long without any line separator is scanned as it is rather than
#: carried over forever (binary junk, or a progress bar that never ends its line).
MAX_LINE_CHARS = 1 << 20

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# torchrun --tee / --log-line-prefix-template: "[rank3]:" or "[default3]:"; srun --label: "3: ".
_RANK = re.compile(r"^\s*(?:\[(?:rank|default)(\d{1,6})\]:|(\d{1,6}): )")
_RANK_FIRST = frozenset("[0123456789 \t")


@dataclass
class ScanState:
    """What the scanner searches for; the caller may swap ``pattern`` mid-stream (after format
    detection), and reads the counters when the stream ends."""

    pattern: re.Pattern[str]
    #: set by the consumer of a chunk that counted its line breaks already (the fast path)
    chunk_newlines: int | None = None
    lines: int = 0
    bytes: int = 0
    ended_with_newline: bool = True


class FileRange:
    """The bytes ``[start, end)`` of an open binary file, as a readable stream.

    A regular file is mapped into memory, and :func:`chunks` cuts its pieces from the mapping
    at line breaks: one copy of each byte, no read call, nothing carried from one piece to the
    next. Anything that cannot be mapped is read."""

    def __init__(self, fh: BinaryIO, start: int, end: int):
        self.fh, self.pos, self.end = fh, start, end
        self.map: mmap.mmap | None = None
        if end > start:
            try:
                self.map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
                self.map = None  # a pipe, an in-memory file, a file system without mmap
            else:
                self.end = min(end, len(self.map))
                if hasattr(self.map, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
                    self.map.madvise(mmap.MADV_SEQUENTIAL)
        if self.map is None:
            fh.seek(start)

    def read(self, n: int = -1) -> bytes:
        hi = self.end if n < 0 else min(self.end, self.pos + n)
        if hi <= self.pos:
            return b""
        data = self.map[self.pos:hi] if self.map is not None else self.fh.read(hi - self.pos)
        self.pos += len(data)
        return data

    def pieces(self, size: int) -> Iterator[bytes]:
        """The range in pieces as :func:`_read_pieces` cuts a stream (each window of ``size``
        bytes starts at the previous cut here, not where the previous read ended)."""
        assert self.map is not None
        mm, first = self.map, True
        while self.pos < self.end:
            lo = self.pos
            hi = min(self.end, lo + (min(size, FIRST_CHUNK_BYTES) if first else size))
            first = False
            cut = mm.rfind(b"\n", lo, hi) + 1 or mm.rfind(b"\r", lo, hi) + 1
            while not cut and hi < self.end and hi - lo < MAX_LINE_CHARS:
                grown = min(self.end, hi + size)
                cut = mm.rfind(b"\n", hi, grown) + 1 or mm.rfind(b"\r", hi, grown) + 1
                hi = grown
            if not cut:
                cut = hi  # the end, or an overlong run without a separator: cut anyway
            self.pos = cut
            yield mm[lo:cut]


def chunks(fh: BinaryIO, state: ScanState, chunk_bytes: int | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_no, chunk)``: the file in pieces that end at a line separator (``\\n`` or
    ``\\r``; only an overlong run without one is cut elsewhere), with the 1-based number of the
    line each piece starts in. Counts bytes and lines into ``state`` as it goes."""
    line_no = 1
    last = b"\n"
    size = chunk_bytes or CHUNK_BYTES
    mapped = isinstance(fh, FileRange) and fh.map is not None
    for body in fh.pieces(size) if mapped else _read_pieces(fh, size):  # type: ignore[attr-defined]
        state.bytes += len(body)
        last = body[-1:]
        yield line_no, body
        counted, state.chunk_newlines = state.chunk_newlines, None
        line_no += body.count(b"\n") if counted is None else counted
    state.ended_with_newline = last == b"\n"
    # A file ending in "\n" has as many lines as newlines; otherwise the last one is partial.
    state.lines = line_no - 1 if state.ended_with_newline else line_no


def _read_pieces(fh: BinaryIO, size: int) -> Iterator[bytes]:
    """The stream in pieces of about ``size`` bytes (the first smaller), each cut after its
    last line break, or after its last ``\\r`` where it has none (looking for both would scan
    every piece twice, the second time in vain in most logs); a run of ``MAX_LINE_CHARS``
    without either is cut anyway, and the rest at the end. None is empty."""
    carry = b""
    first = True
    while True:
        data = fh.read(min(size, FIRST_CHUNK_BYTES) if first else size)
        first = False
        if not data:
            if carry:
                yield carry
            return
        # the carried rest holds no line break: the last one is in the new data, if anywhere
        cut = data.rfind(b"\n") + 1
        if cut:
            whole = data if cut == len(data) else memoryview(data)[:cut]
            yield b"".join((carry, whole)) if carry else bytes(whole)
            carry = data[cut:]
            continue
        carry += data
        cut = carry.rfind(b"\r") + 1
        if cut:
            yield carry[:cut]
            carry = carry[cut:]
        elif len(carry) >= MAX_LINE_CHARS:
            yield carry
            carry = b""


class Decoder:
    """UTF-8 (bad bytes replaced) across chunks: a character cut by an overlong line's forced
    cut is completed by the next chunk."""

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def __call__(self, chunk: bytes, final: bool = False) -> str:
        return self._dec.decode(chunk, final=final)

    @property
    def pending(self) -> bool:
        """Whether it holds the first bytes of a character cut off by a forced cut."""
        return bool(self._dec.getstate()[0])


def segments(body: str, line_no: int, state: ScanState) -> Iterator[tuple[int, str]]:
    """``(line_no, segment)`` for every ``\\n``/``\\r``-delimited segment of ``body`` (which
    starts in line ``line_no``) that contains a match of ``state.pattern`` (read at every
    search: the caller may swap it between two segments)."""
    counted = 0
    pos = 0
    end_of_body = len(body)
    while True:
        m = state.pattern.search(body, pos)
        if m is None:
            break
        s = m.start()
        # Search for "\r" only within the "\n"-line: an unbounded search would run to the
        # end of the chunk on every match in a log without carriage returns (quadratic).
        a = body.rfind("\n", 0, s) + 1
        a = max(a, body.rfind("\r", a, s) + 1)
        e = body.find("\n", s)
        if e < 0:
            e = end_of_body
        e_r = body.find("\r", s, e)
        if e_r >= 0:
            e = e_r
        line_no += body.count("\n", counted, a)
        counted = a
        yield line_no, body[a:e]
        pos = e + 1
        if pos >= end_of_body:
            break


def scan(fh: BinaryIO, state: ScanState, chunk_bytes: int | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_no, segment)`` for every ``\\n``/``\\r``-delimited segment of ``fh`` that
    contains a match of ``state.pattern``. ``line_no`` is 1-based and counts ``\\n`` only.

    The last segment is yielded even without a terminating newline (excerpts and live logs
    often end that way); a value cut off mid-number there cannot be told from a whole one.
    """
    decode = Decoder()
    for line_no, chunk in chunks(fh, state, chunk_bytes):
        yield from segments(decode(chunk), line_no, state)
    decode(b"", final=True)


def clean(segment: str) -> tuple[str, int | None]:
    """Strip ANSI escape codes and a leading rank prefix; return ``(text, rank)``."""
    if "\x1b" in segment:
        segment = _ANSI.sub("", segment)
    if segment[:1] not in _RANK_FIRST:  # most lines: skip the regex
        return segment, None
    m = _RANK.match(segment)
    if m is None:
        return segment, None
    rank = m.group(1) if m.group(1) is not None else m.group(2)
    return segment[m.end():], int(rank)


def rank_of(prefix: bytes) -> int | None:
    """The rank a line's leading bytes name, exactly as :func:`clean` reads it."""
    return clean(prefix.decode("utf-8", errors="replace"))[1]
