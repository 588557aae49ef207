"""The one record every log parser yields: what a framework printed about one training step.

Units are in the names. Every field except ``iteration`` and ``raw_line_no`` is optional
because formats carry different subsets (torchtitan prints no step time, NeMo prints no grad
norm, MaxText prints throughput per device only).
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain, repeat
from typing import Any, NamedTuple, overload

GIB = 2**30
MIB = 2**20

# A number as frameworks print them: 12.39, 1.234e+03, 9.876543E+00, -12.71, nan, inf, 146,261.
NUM = r"[-+]?(?:nan|inf(?:inity)?|(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_NUM_RE = re.compile(NUM, re.IGNORECASE)


class StepRecord(NamedTuple):
    """One training step as logged (a named tuple: a multi-GB log holds millions, and the
    parsers' fast paths build them from columns at C speed with :meth:`_make`).

    ``iteration`` is the step number exactly as the framework printed it (NeMo and MaxText
    count from 0, Megatron, torchtitan and llmb from 1). ``raw_line_no`` is the 1-based line of
    the file (lines counted by ``\\n``, as ``grep -n`` does; progress-bar updates separated by
    ``\\r`` share their line's number).
    """

    iteration: int
    raw_line_no: int
    step_time_s: float | None = None
    #: achieved model TFLOP/s (1e12 FLOP/s) per GPU, as the framework computed it
    tflops_per_gpu: float | None = None
    #: tokens per second of the whole job
    tokens_per_s: float | None = None
    #: tokens per second per GPU (MaxText ``Tokens/s/device``, torchtitan ``tps``)
    tokens_per_s_per_gpu: float | None = None
    loss: float | None = None
    grad_norm: float | None = None
    #: peak memory per GPU in bytes, as logged
    mem_bytes: float | None = None
    #: model FLOPs utilization as a fraction (0.41), when the framework prints one
    mfu: float | None = None
    rank: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()


#: one sequence per :class:`StepRecord` field, in order: a list, a numpy array (the fast
#: path's numbers), or ``None`` for a field no record has
Columns = list

_new = tuple.__new__  # StepRecord._make without its Python frame


def plain(column: Any) -> list[Any]:
    """A column as a list of Python values (an array's ``tolist``, at C speed)."""
    return column if isinstance(column, list) else column.tolist()


def records_of(columns: Sequence[Any]) -> list[StepRecord]:
    """Records from columns (one per :class:`StepRecord` field, in order; ``None`` for a
    field no record has), at C speed."""
    return list(map(_new, repeat(StepRecord), zip(*(repeat(None) if c is None else plain(c) for c in columns))))


def columns_of(records: Sequence[StepRecord]) -> Columns:
    """The inverse of :func:`records_of`."""
    if not records:
        return [[] for _ in StepRecord._fields]
    return [list(c) for c in zip(*records)]


def joined(parts: Iterable[Columns]) -> Columns:
    """Several batches' columns as one batch's (arrays stay arrays where every batch has one)."""
    parts = list(parts)
    out: Columns = []
    for i in range(len(StepRecord._fields)):
        col = [p[i] for p in parts]
        if all(c is None for c in col):
            out.append(None)
        elif not any(c is None or isinstance(c, list) for c in col):
            import numpy as np  # not at import: the CLI starts without it

            out.append(np.concatenate(col))
        else:
            out.append(list(chain.from_iterable(repeat(None, len(p[0])) if c is None else plain(c)
                                                for c, p in zip(col, parts))))
    return out


@contextmanager
def gc_paused() -> Iterator[None]:
    """Millions of records and no reference cycles: the cyclic collector would only rescan
    them, again and again, as they accumulate (building 1.4 M records took 2.9 s with it, 0.3 s
    without)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            # What was made meanwhile goes straight to the oldest generation (freeze, then
            # unfreeze into it): the first young collection would otherwise scan every record
            # once more for nothing (0.3 s for 1.4 M records). They stay collectable.
            gc.freeze()
            gc.enable()
            gc.unfreeze()


class StepRecords(Sequence[StepRecord]):
    """A parsed log's records, in order: a read-only sequence of :class:`StepRecord`.

    The fast path reads a big log into batches of columns; the records are built from them
    the first time they are read as a whole (for a 1 GB log, 1.4 M records: a sixth of the
    time the parse took), and a field's values can be had without building any
    (:meth:`column`). It compares, prints and slices as the tuple of its records does."""

    __slots__ = ("_parts", "_records", "_n")

    def __init__(self, records: Iterable[StepRecord] = ()):
        self._records: tuple[StepRecord, ...] | None = tuple(records)
        self._parts: list[Columns] = []
        self._n = len(self._records)

    @classmethod
    def of_columns(cls, parts: list[Columns]) -> StepRecords:
        """The records of batches of columns (one per :class:`StepRecord` field, ``None`` for
        a field no record of the batch has), in order."""
        out = cls()
        out._records, out._parts, out._n = None, parts, sum(len(p[0]) for p in parts)
        return out

    def _all(self) -> tuple[StepRecord, ...]:
        if self._records is None:
            with gc_paused():
                self._records = tuple(chain.from_iterable(map(records_of, self._parts)))
            self._parts = []
        return self._records

    def column(self, name: str) -> list[Any]:
        """Every record's ``name`` field, in order."""
        i = StepRecord._fields.index(name)
        if self._records is None:
            return list(chain.from_iterable(repeat(None, len(p[0])) if p[i] is None else plain(p[i]) for p in self._parts))
        return [r[i] for r in self._records]

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> StepRecord: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[StepRecord, ...]: ...

    def __getitem__(self, i):
        if self._records is None and isinstance(i, int):
            if not -self._n <= i < self._n:
                raise IndexError("record index out of range")
            i %= self._n
            for part in self._parts:  # few parts hold many records: usually the first or last
                if i < len(part[0]):
                    return _new(StepRecord, (None if c is None else plain(c[i:i + 1])[0] for c in part))
                i -= len(part[0])
        return self._all()[i]

    def __iter__(self) -> Iterator[StepRecord]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StepRecords):
            return self._all() == other._all()
        if isinstance(other, tuple):
            return self._all() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._all())


def to_float(text: str | None) -> float | None:
    """The leading number of ``text`` (commas as thousands separators allowed), or ``None``.

    ``nan``/``inf`` come back as float NaN/inf: statistics must see them to call a run
    INVALID rather than silently dropping them.
    """
    if text is None:
        return None
    try:
        return float(text)  # the common case, and C-fast (it ignores surrounding blanks)
    except ValueError:
        pass
    m = _NUM_RE.match(text.strip())
    if m is None:
        return None
    try:
        return float(m.group(0).replace(",", ""))
    except ValueError:
        return None

