"""The one record every log parser yields: what a framework printed about one training step.

Units are in the names. Every field except ``iteration`` and ``raw_line_no`` is optional
because formats carry different subsets (torchtitan prints no step time, NeMo prints no grad
norm, MaxText prints throughput per device only).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

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

