"""The fast path: every step line of a chunk at once, at C speed.

A parser that has read one step line the usual way may compile that line's layout
(:class:`~llmb.results.parsers.base.FastLayout`). :func:`read_columns` then finds the step
lines of a whole chunk with that one regex and converts them column by column with ``map``
and numpy (the line numbers too, from the chunk's line breaks): no Python code runs per line,
and no record is built (:class:`~llmb.results.record.StepRecords` builds them when read). With
chunks small enough to stay in a core's cache, a 1 GB log parses as fast as ``grep | awk``.

It is an optimisation, never a second parser. It gives up on a chunk (returns ``None``, and the
chunk is read line by line) unless every step head in it is one the layout matched whole:
carriage returns or ANSI codes anywhere in the chunk, a marker outside a match, an earlier
step head on a matched line, a value that is not a plain number. So both paths always yield the same records;
``tests/test_results_fast.py`` checks that on generated and real logs.
"""

from __future__ import annotations

import operator
import re
from itertools import repeat

import numpy as np

from llmb.results.parsers.base import FastLayout
from llmb.results.reader import rank_of
from llmb.results.record import Columns, StepRecord, records_of

_FIELDS = StepRecord._fields
_VALUE_FIELDS = _FIELDS[2:-1]  # between (iteration, raw_line_no) and rank
_start = re.Match.start
_groups = re.Match.groups


Last = dict  # rank -> (iteration, planned last iteration) of that rank's last step line


def read_chunk(layout: FastLayout, chunk: bytes, line_no: int) -> tuple[list[StepRecord], Last, int] | None:
    """The records of every step line in ``chunk`` (which starts in line ``line_no`` and ends
    at a line break or the end of the file), the head of each rank's last one (iteration,
    planned last iteration) and the chunk's number of line breaks; or ``None`` when the
    chunk must be read line by line."""
    got = read_columns(layout, chunk, line_no)
    if got is None:
        return None
    cols, last, newlines = got
    return records_of(cols), last, newlines


def read_columns(layout: FastLayout, chunk: bytes, line_no: int) -> tuple[Columns, Last, int] | None:
    """:func:`read_chunk`'s records as columns, one per :class:`StepRecord` field in order
    (``None`` for a field no record has): what a split worker sends back, no record built."""
    if b"\r" in chunk or b"\x1b" in chunk:
        return None
    each = layout.each_marker
    matches = list((each or layout.regex).finditer(chunk))
    if each is None and len(matches) != chunk.count(layout.marker):
        return None
    if not matches:
        return [None] * len(_FIELDS), {}, chunk.count(b"\n")
    n = len(matches)
    starts = np.fromiter(map(_start, matches), np.int64, n)
    text = np.frombuffer(chunk, np.uint8)
    breaks = np.flatnonzero(text == 10)
    # The usual case: every step head starts its line (a chunk starts a line), so no line
    # has a rank prefix or anything else before its head. (A head at 0 looks at the chunk's
    # last byte, a line break unless the file ends without one: then the careful way.)
    prefixes = None
    if not (text[starts - 1] == 10).all():
        heads = starts.tolist()
        begins = map(operator.add, map(chunk.rfind, repeat(b"\n"), repeat(0), heads), repeat(1))
        prefixes = list(map(chunk.__getitem__, map(slice, begins, heads)))
        if any(map(operator.contains, prefixes, repeat(layout.head_word))):
            return None  # an earlier head on the line, which the line-by-line parser would read
    # a head's line: the chunk's first, plus the line breaks before it
    lines = np.searchsorted(breaks, starts) + line_no
    newlines = len(breaks)
    return _converted(layout, matches, lines, prefixes, newlines)


def _converted(layout: FastLayout, matches: list[re.Match[bytes]], lines: np.ndarray, prefixes: list[bytes] | None,
               newlines: int) -> tuple[Columns, Last, int] | None:
    """The columns of the matched step lines (``None`` when a value is not a plain number):
    numbers as numpy arrays (sent between processes as their bytes), ranks as a list."""
    columns = list(zip(*map(_groups, matches)))
    if None in columns[0]:
        return None  # a marker no step line of the layout follows
    n = len(matches)
    try:
        iterations = np.fromiter(map(int, columns[0]), np.int64, n)  # \d{1,12}, as the planned one
        values = {}
        for name, col, divisor in zip(layout.fields, columns[2:], layout.divisors):
            floats = np.fromiter(map(float, col), np.float64, n)
            values[name] = floats / divisor if divisor else floats
    except ValueError:
        return None  # an empty or odd value: the tolerant reading decides
    if "step_time_s" not in values and "tflops_per_gpu" not in values:
        return None
    distinct = set(prefixes) if prefixes is not None else {b""}
    if distinct == {b""}:
        ranks = None
    else:
        rank = {p: rank_of(p) for p in distinct} if len(distinct) < 64 else None
        ranks = list(map(rank.__getitem__, prefixes) if rank is not None else map(rank_of, prefixes))
        if not any(map(operator.is_not, ranks, repeat(None))):
            ranks = None
    if ranks is None:
        last = {None: (int(iterations[-1]), int(columns[1][-1]))}
    else:
        last = {r: (int(it), int(plan)) for r, (it, plan) in dict(zip(ranks, zip(iterations, columns[1]))).items()}
    return [iterations, lines, *map(values.get, _VALUE_FIELDS), ranks], last, newlines
