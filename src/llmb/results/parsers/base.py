"""What every log-format parser provides. One subclass per format, one module each."""

from __future__ import annotations

import re
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


def has_throughput(*values: float | None) -> bool:
    """A record is worth keeping only if it says something about speed."""
    return any(v is not None for v in values)


def require_throughput(*values: float | None) -> None:
    """A line with the format's head but no speed field is malformed (often a truncated last
    line): raise, so the driver counts it instead of inventing a step."""
    if not has_throughput(*values):
        raise ValueError("step line without step time or throughput")
