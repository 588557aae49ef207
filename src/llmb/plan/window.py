"""The statistics window of a run: which iterations its step time is averaged over.

The reference parsers averaged iterations 11–44 of a 50-step run (later 35–44). llmb keeps
11–44: it skips the warm-up steps (compilation, allocator growth, data prefetch) and the tail
where profilers and checkpoint saves start, and still leaves 34 samples for a meaningful
standard deviation. Iterations are numbered as the framework printed them. For runs of another
length the same fractions are used: ``ceil(11/50·N)`` to ``floor(44/50·N)`` of ``N`` planned
steps (so 10 steps give 3–8).

Planning uses it for the engine's own runs; :mod:`llmb.results.stats` for every parsed log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmb.errors import LlmbError

REFERENCE_STEPS = 50
REFERENCE_WINDOW = (11, 44)


@dataclass(frozen=True)
class Window:
    """Inclusive range of iteration numbers, as printed by the framework."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if self.first < 0 or self.last < self.first:
            raise LlmbError(f"window {self.first}:{self.last} is empty or negative; give A:B with 0 <= A <= B")

    def __contains__(self, iteration: object) -> bool:
        return isinstance(iteration, int) and self.first <= iteration <= self.last

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.first}:{self.last}"


def parse_window(text: str) -> Window:
    """``"11:44"`` -> ``Window(11, 44)``; anything else is a user mistake."""
    first, sep, last = text.partition(":")
    if not sep:
        raise LlmbError(f"window {text!r} must look like A:B (e.g. 11:44)")
    try:
        return Window(int(first), int(last))
    except ValueError:
        raise LlmbError(f"window {text!r} must be two whole numbers A:B (e.g. 11:44)") from None


def default_window(planned_steps: int | None = None) -> Window:
    """The reference window 11–44 of 50 steps, scaled to ``planned_steps`` when known."""
    n = planned_steps or REFERENCE_STEPS
    if n == REFERENCE_STEPS:
        return Window(*REFERENCE_WINDOW)
    first = math.ceil(REFERENCE_WINDOW[0] * n / REFERENCE_STEPS)
    last = max(first, math.floor(REFERENCE_WINDOW[1] * n / REFERENCE_STEPS))
    return Window(first, last)
