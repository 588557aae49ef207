"""The step window, its statistics and a run's completeness status. Pure functions.

**Default window**: iterations 11–44 of 50, scaled to the run's length (:mod:`llmb.plan.window`),
when the log is the recipe's run: its planned steps are known (printed, or the recipe's) and the
window holds at least one logged iteration. **Otherwise** (an excerpt, a long run logged from
iteration 15107, a log every 10 steps, one step) :func:`observed_window`: the logged steps after
warm-up, i.e. without the first 10 % of them (rounded up, none of fewer than three) and without
the steps at the start whose time lies more than 3x away from the median of the rest
(compilation, asynchronous dispatch). Statistics are given whenever one step is found, always
with the window used.

**Spread** is the *sample* standard deviation (ddof = 1); ``None`` with fewer than two values.

**Status** (first that applies):

* ``NO_DATA`` — the log holds no step of a known format;
* ``INVALID`` — a NaN or infinite loss or grad norm anywhere in the run (a diverged run's speed
  means nothing), or a step time in the window that is not a positive finite number (clock
  artefacts such as NeMo's negative ``train_step_timing`` would poison the mean);
* ``INCOMPLETE`` — an iteration of the window is missing (of those the log prints: with
  Megatron's ``--log-interval 10`` only every tenth), or the log shows the run stopped before
  its planned last step;
* ``OK``.

Step times more than 3x away from the window's median are listed as outliers (not dropped:
the mean is what the run did; the median is there to compare).
"""

from __future__ import annotations

import bisect
import math
import operator
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from itertools import repeat
from typing import Any

from llmb.plan.window import REFERENCE_STEPS, REFERENCE_WINDOW, Window, default_window, parse_window
from llmb.results.record import StepRecord

__all__ = [
    "REFERENCE_STEPS", "REFERENCE_WINDOW", "METRIC_FIELDS", "OUTLIER_FACTOR", "Status", "Summary", "Window",
    "WindowStats", "covers", "default_window", "observed_window", "parse_window", "summarize", "window_stats",
]

#: a window step time this many times above or below the window's median is reported as an
#: outlier (MaxText's asynchronous dispatch logs 0.002 s steps, checkpoints add seconds)
OUTLIER_FACTOR = 3.0

#: the share of a log's first steps the observed window leaves out as warm-up
WARMUP_FRACTION = 0.10

#: record fields summarized over the window
METRIC_FIELDS = ("step_time_s", "tflops_per_gpu", "tokens_per_s", "tokens_per_s_per_gpu", "mem_bytes")


class Status(str, Enum):
    OK = "OK"
    INCOMPLETE = "INCOMPLETE"
    INVALID = "INVALID"
    NO_DATA = "NO_DATA"


@dataclass(frozen=True)
class Summary:
    """Statistics of one metric over the window; ``std`` is the sample standard deviation."""

    mean: float
    std: float | None
    min: float
    max: float
    median: float
    count: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stdev(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof=1), two passes with exactly rounded sums: as accurate as
    :func:`statistics.stdev` for step times, without its exact fractions (seconds for 10^6 steps)."""
    mean = math.fsum(values) / len(values)
    dev = list(map(operator.sub, values, repeat(mean)))
    return math.sqrt(math.fsum(map(operator.mul, dev, dev)) / (len(values) - 1))


def _all_finite(column: Iterable[float | None]) -> bool:
    return all(map(math.isfinite, [v for v in column if v is not None]))


def _finite(column: Iterable[float | None]) -> list[float]:
    """The finite values of a column (``None``, NaN and inf left out)."""
    values = [v for v in column if v is not None]
    return values if all(map(math.isfinite, values)) else [v for v in values if math.isfinite(v)]


def summarize(values: Sequence[float]) -> Summary | None:
    """Mean, sample std (ddof=1), min, max, median and count; ``None`` for no values."""
    if not values:
        return None
    return Summary(
        mean=statistics.fmean(values),
        std=_stdev(values) if len(values) > 1 else None,
        min=min(values),
        max=max(values),
        median=statistics.median(values),
        count=len(values),
    )


@dataclass(frozen=True)
class WindowStats:
    window: Window
    status: Status
    reasons: tuple[str, ...]
    metrics: dict[str, Summary]
    #: iterations of the window found in the log
    present: int
    #: iterations in the window whose step time is an outlier (kept in the statistics)
    outliers: tuple[int, ...] = ()
    #: the log prints every ``interval``-th iteration (Megatron's --log-interval)
    interval: int = 1
    #: iterations of the window the log should hold, given the interval
    expected: int = 0

    def mean(self, name: str) -> float | None:
        s = self.metrics.get(name)
        return s.mean if s else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "window": str(self.window),
            "status": self.status.value,
            "reasons": list(self.reasons),
            "present": self.present,
            "expected": self.expected,
            "interval": self.interval,
            "outliers": list(self.outliers),
            "metrics": {k: v.as_dict() for k, v in self.metrics.items()},
        }


def _bad(value: float | None) -> bool:
    return value is not None and not math.isfinite(value)


def window_stats(
    records: Iterable[StepRecord],
    window: Window,
    final_reached: bool | None = None,
) -> WindowStats:
    """Statistics of ``records`` (one rank, one record per iteration) over ``window``.

    ``final_reached`` is what the log says about reaching the planned last step (``None`` when
    the format does not say; then only the window's completeness counts).
    """
    records = list(records)
    if not records:
        return WindowStats(window, Status.NO_DATA, ("no step lines found",), {}, 0)
    reasons: list[str] = []
    if not (_all_finite(map(operator.attrgetter("loss"), records))
            and _all_finite(map(operator.attrgetter("grad_norm"), records))):
        diverged = [r.iteration for r in records if _bad(r.loss) or _bad(r.grad_norm)]
        reasons.append(f"NaN/inf loss or grad norm at iteration(s) {_short(diverged)}")
    lo, hi = window.first, window.last
    inside = [r for r in records if lo <= r.iteration <= hi]
    times = [t for t in map(operator.attrgetter("step_time_s"), inside) if t is not None]
    if not _all_finite(times) or (times and min(times) <= 0):
        bad_time = [
            r.iteration
            for r in inside
            if r.step_time_s is not None and not (math.isfinite(r.step_time_s) and r.step_time_s > 0)
        ]
        reasons.append(f"non-positive or non-finite step time at iteration(s) {_short(bad_time)}")
    invalid = bool(reasons)
    interval = log_interval(records)
    anchor = records[0].iteration
    expected = [i for i in range(window.first, window.last + 1) if (i - anchor) % interval == 0]
    have = set(map(_ITERATION, inside))
    present = len(have)
    missing = [i for i in expected if i not in have]
    if not expected:
        reasons.append(f"window {window} holds no logged iteration (the log prints every {interval})")
    elif missing:
        reasons.append(f"window {window} misses iteration(s) {_short(missing)}")
    if final_reached is False:
        reasons.append("the run stopped before its planned last step")
    if invalid:
        status = Status.INVALID
    elif reasons:
        status = Status.INCOMPLETE
    else:
        status = Status.OK
    metrics: dict[str, Summary] = {}
    for name in METRIC_FIELDS:
        summary = summarize(_finite(map(operator.attrgetter(name), inside)))
        if summary is not None:
            metrics[name] = summary
    outliers: tuple[int, ...] = ()
    st = metrics.get("step_time_s")
    if st is not None and st.median > 0:
        outliers = tuple(
            r.iteration
            for r in inside
            if r.step_time_s is not None
            and not (st.median / OUTLIER_FACTOR <= r.step_time_s <= st.median * OUTLIER_FACTOR)
        )
    return WindowStats(window, status, tuple(reasons), metrics, present, outliers, interval, len(expected))


_ITERATION = operator.attrgetter("iteration")


def observed_window(records: Sequence[StepRecord]) -> Window | None:
    """The logged steps after warm-up (see the module docstring); ``None`` for no steps."""
    its = sorted(set(map(_ITERATION, records)))
    if not its:
        return None
    time_of = dict(zip(map(_ITERATION, records), map(operator.attrgetter("step_time_s"), records)))
    times = list(map(time_of.get, its))
    skip = math.ceil(WARMUP_FRACTION * len(its)) if len(its) >= 3 else 0
    while skip < len(its) - 1:
        t = times[skip]
        rest = [v for v in _finite(times[skip + 1:]) if v > 0]
        if t is None or not rest:
            break
        median = statistics.median(rest)
        if median / OUTLIER_FACTOR <= t <= median * OUTLIER_FACTOR:
            break
        skip += 1
    return Window(its[skip], its[-1])


def covers(window: Window, records: Sequence[StepRecord]) -> bool:
    """Whether ``window`` holds at least one logged iteration."""
    its = list(map(_ITERATION, records))
    if all(map(operator.le, its, its[1:])):  # sorted, as a parsed log's are
        k = bisect.bisect_left(its, window.first)
        return k < len(its) and its[k] <= window.last
    return any(window.first <= i <= window.last for i in its)


def log_interval(records: Sequence[StepRecord]) -> int:
    """How often the log prints a step: the most common gap between consecutive logged
    iterations (1 when every step is logged; Megatron's ``--log-interval`` otherwise, whose
    printed step time is the mean over the interval)."""
    its = sorted(set(map(_ITERATION, records)))
    gaps = Counter(map(operator.sub, its[1:], its[:-1]))
    if not gaps:
        return 1
    best = max(gaps.values())
    return min(g for g, n in gaps.items() if n == best)


def _short(items: list[int], limit: int = 6) -> str:
    text = ", ".join(map(str, items[:limit]))
    return text + (f", ... ({len(items)} in all)" if len(items) > limit else "")
