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
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

CHUNK_BYTES = 4 << 20
#: the first read of a log is smaller: its format and step-line layout are learned from it
#: line by line, and everything after goes the fast way (llmb.results.fast)
FIRST_CHUNK_BYTES = 256 << 10
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


def chunks(fh: BinaryIO, state: ScanState, chunk_bytes: int | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_no, chunk)``: the file in pieces that end at a line separator (``\\n`` or
    ``\\r``; only an overlong run without one is cut elsewhere), with the 1-based number of the
    line each piece starts in. Counts bytes and lines into ``state`` as it goes."""
    line_no = 1
    carry = b""
    last = b"\n"
    size = chunk_bytes or CHUNK_BYTES
    first = True
    while True:
        data = fh.read(min(size, FIRST_CHUNK_BYTES) if first else size)
        first = False
        final = not data
        state.bytes += len(data)
        buf = carry + data if carry else data
        if final:
            cut = len(buf)
        else:
            cut = max(buf.rfind(b"\n"), buf.rfind(b"\r")) + 1
            if cut == 0 and len(buf) < MAX_LINE_CHARS:
                carry = buf
                continue
            if cut == 0:
                cut = len(buf)
        body, carry = (buf, b"") if cut == len(buf) else (buf[:cut], buf[cut:])
        if body:
            last = body[-1:]
            yield line_no, body
            counted, state.chunk_newlines = state.chunk_newlines, None
            line_no += body.count(b"\n") if counted is None else counted
        if final:
            break
    state.ended_with_newline = last == b"\n"
    # A file ending in "\n" has as many lines as newlines; otherwise the last one is partial.
    state.lines = line_no - 1 if state.ended_with_newline else line_no


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
