"""What every log-format parser provides. One subclass per format, one module each."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from llmb.results.record import StepRecord


class Parser:
    """Turns the candidate lines of one log into :class:`StepRecord` s.

    A fresh instance is used per log (parsers may keep state, e.g. Megatron-Bridge pairs two
    kinds of line). The driver hands over only lines matching :attr:`marker`, already stripped
    of ANSI codes and rank prefixes.
    """

    #: format name, as given to ``--format``
    name: ClassVar[str]
    #: cheap literal pattern locating candidate lines in a chunk of text
    marker: ClassVar[re.Pattern[str]]
    #: a line that proves the log is in this format
    detect: ClassVar[re.Pattern[str]]
    #: the first iteration number the framework prints (0 or 1)
    iteration_base: ClassVar[int]
    #: the tool that writes this format, for messages
    title: ClassVar[str]

    def __init__(self) -> None:
        #: (steps done, steps planned) per rank, from the last line that printed them
        self.progress: dict[int | None, tuple[int, int]] = {}

    def feed(self, text: str, line_no: int, rank: int | None) -> StepRecord | None:
        """The record on this line, or ``None``. May raise ``ValueError`` on a malformed line
        (the driver counts it and moves on)."""
        raise NotImplementedError

    def finish(self) -> list[StepRecord]:
        """Records held back until the end of the stream (none for most formats)."""
        return []

    def layout(self, text: str) -> FastLayout | None:
        """The compiled layout of a step line this parser just read (see :class:`FastLayout`),
        or ``None``: no fast path for this format or this line."""
        return None

    def progress_of(self, iteration: int, planned: int) -> tuple[int, int]:
        """(steps done, steps planned) from a step head's two numbers."""
        return iteration, planned


def has_throughput(*values: float | None) -> bool:
    """A record is worth keeping only if it says something about speed."""
    return any(v is not None for v in values)


def require_throughput(*values: float | None) -> None:
    """A line with the format's head but no speed field is malformed (often a truncated last
    line): raise, so the driver counts it instead of inventing a step."""
    if not has_throughput(*values):
        raise ValueError("step line without step time or throughput")


# ---------------------------------------------------------------- the fast path for big logs
#
# A log's step lines all share one layout (the same keys in the same order), so once the
# first step line has been read the usual way, a parser can compile that layout into one bytes
# regex from the step head to the end of the line. :func:`llmb.results.fast.read_columns` then
# finds every step line of a chunk and converts the columns at C speed. The compiled
# layout is stricter than the parser: a step line it does not match sends the whole chunk back
# to the line-by-line path, so both paths always give the same records.

@dataclass(frozen=True)
class FastLayout:
    """One log's step-line layout, compiled. ``regex`` matches from the step head to the end
    of the line; group 1 is the iteration, group 2 the planned last one, then one group per
    entry of ``fields`` (a :class:`StepRecord` field), whose value is divided by its divisor
    (Megatron prints milliseconds)."""

    regex: re.Pattern[bytes]
    #: the parser's marker as bytes: every occurrence must be inside a match
    marker: bytes
    #: the step head's first word: it must not occur between a line's start and its match
    #: (the line-by-line parser reads the first head of a line)
    head_word: bytes
    fields: tuple[str, ...]
    divisors: tuple[float | None, ...]
    #: when the step head begins with the marker itself (NeMo 2's ``Training epoch``): the
    #: marker, then the rest of the layout *or nothing*, so that one search finds every marker
    #: and says which ones a step line follows (``None``: the marker is counted separately)
    each_marker: re.Pattern[bytes] | None = None


def compile_layout(head: bytes, head_word: bytes, pieces: list[bytes], fields: list[str], marker: str,
                   divisors: dict[str, float] | None = None) -> FastLayout:
    """A :class:`FastLayout` from the step head's regex (its two groups: iteration, planned;
    nothing in it may match a line break), the regex pieces of the sample line's fields in
    order (each capturing piece holds one group) and the record field each capturing piece
    fills."""
    tail = b"".join(pieces) + rb"(?=\n|\Z)"
    literal = marker.encode()
    # The marker as a regex is the marker itself, the head begins with it, and no key of the
    # layout holds it (a value holds no blank; backslashes off, the pieces are the keys' text).
    own = (all(c.isalnum() or c == " " for c in marker) and head.startswith(literal)
           and literal not in b"".join(pieces).replace(b"\\", b""))
    return FastLayout(
        regex=re.compile(head + tail),
        marker=literal,
        head_word=head_word,
        fields=tuple(fields),
        divisors=tuple((divisors or {}).get(f) for f in fields),
        each_marker=(re.compile(re.escape(literal) + b"(?:" + head[len(literal):] + tail + b"|)")
                     if own else None),
    )
