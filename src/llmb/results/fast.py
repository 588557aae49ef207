"""The fast path: every step line of a multi-MB chunk at once, at C speed.

A parser that has read one step line the usual way may compile that line's layout
(:class:`~llmb.results.parsers.base.FastLayout`). :func:`read_chunk` then finds the step lines
of a whole chunk with that one regex and builds the records column by column with ``map`` and
``zip``: no Python code runs per line, which is what makes a 1 GB log parse as fast as
``grep | awk``.

It is an optimisation, never a second parser. It gives up on a chunk (returns ``None``, and the
chunk is read line by line) unless every step head in it is one the layout matched whole:
carriage returns or ANSI codes anywhere in the chunk, a marker outside a match, an earlier
step head on a matched line, a value that is not a plain number. So both paths always yield the same records;
``tests/test_results_fast.py`` checks that on generated and real logs.
"""

from __future__ import annotations

import operator
import re
from itertools import accumulate, repeat

from llmb.results.parsers.base import FastLayout
from llmb.results.reader import rank_of
from llmb.results.record import StepRecord

_FIELDS = StepRecord._fields
_VALUE_FIELDS = _FIELDS[2:-1]  # between (iteration, raw_line_no) and rank
_start = re.Match.start
_groups = re.Match.groups
_new = tuple.__new__  # StepRecord._make without its Python frame


def read_chunk(layout: FastLayout, chunk: bytes, line_no: int) -> tuple[list[StepRecord], list[int], int] | None:
    """The records of every step line in ``chunk`` (which starts in line ``line_no`` and ends
    at a line break or the end of the file), each one's planned last iteration and the
    chunk's number of line breaks; or ``None`` when the chunk must be read line by line."""
    got = read_columns(layout, chunk, line_no)
    if got is None:
        return None
    cols, planned, newlines = got
    return records_of(cols), planned, newlines


def records_of(columns) -> list[StepRecord]:
    """Records from columns (one sequence per :class:`StepRecord` field, in order)."""
    return list(map(_new, repeat(StepRecord), zip(*columns)))


def read_columns(layout: FastLayout, chunk: bytes, line_no: int) -> tuple[list[list], list[int], int] | None:
    """:func:`read_chunk`'s records as columns, one list per :class:`StepRecord` field in
    order (what a split worker sends back: no record is built twice)."""
    if b"\r" in chunk or b"\x1b" in chunk:
        return None
    matches = list(layout.regex.finditer(chunk))
    if len(matches) != chunk.count(layout.marker):
        return None
    if not matches:
        return [[] for _ in _FIELDS], [], chunk.count(b"\n")
    starts = list(map(_start, matches))
    # The usual case: every step head starts its line (a chunk starts a line), so no line
    # has a rank prefix or anything else before its head.
    before = list(map(chunk.__getitem__, map(operator.sub, starts, repeat(1))))
    if starts[0] == 0:
        before[0] = 10
    prefixes = None
    if set(before) != {10}:
        begins = map(operator.add, map(chunk.rfind, repeat(b"\n"), repeat(0), starts), repeat(1))
        prefixes = list(map(chunk.__getitem__, map(slice, begins, starts)))
        if any(map(operator.contains, prefixes, repeat(layout.head_word))):
            return None  # an earlier head on the line, which the line-by-line parser would read
    columns = list(zip(*map(_groups, matches)))
    try:
        iterations = list(map(int, columns[0]))
        planned = list(map(int, columns[1]))
        values = {}
        for name, col, divisor in zip(layout.fields, columns[2:], layout.divisors):
            floats = map(float, col)
            values[name] = list(map(operator.truediv, floats, repeat(divisor)) if divisor else floats)
    except ValueError:
        return None  # an empty or odd value: the tolerant reading decides
    if "step_time_s" not in values and "tflops_per_gpu" not in values:
        return None
    # no line break between a line's start and its head: counting up to the heads is the same
    lines = list(accumulate(map(chunk.count, repeat(b"\n"), [0, *starts[:-1]], starts), initial=line_no))[1:]
    n = len(matches)
    distinct = set(prefixes) if prefixes is not None else {b""}
    if distinct == {b""}:
        ranks = [None] * n
    else:
        rank = {p: rank_of(p) for p in distinct} if len(distinct) < 64 else None
        ranks = list(map(rank.__getitem__, prefixes) if rank is not None else map(rank_of, prefixes))
    cols = [iterations, lines, *(values.get(f) or [None] * n for f in _VALUE_FIELDS), ranks]
    newlines = lines[-1] - line_no + chunk.count(b"\n", starts[-1])
    return cols, planned, newlines
