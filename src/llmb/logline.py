"""llmb's own per-step log line: one stable, greppable line per training step.

Format (fields in this order; ``key: value`` pairs separated by `` | ``)::

    llmb iteration 12/50 | step_time_s: 1.2345 | tokens_per_s: 13269.1 | tflops_per_device: 0.1234 | mfu_pct: 34.12 | loss: 7.123456 | grad_norm: 1.2345 | peak_mem_gib: 1.234

``iteration`` counts from 1 to the run's max steps. Values are plain decimals, ``nan`` or
``inf`` when the run produced them; ``mfu_pct`` is a percentage of the device peak (on a CPU,
of the measured GEMM ceiling). The engine writes it with :func:`format_step_line`; the results
parser reads it with :func:`parse_step_line`. Changing it is a breaking change: add fields at
the end only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

PREFIX = "llmb iteration "
FIELDS = (
    "step_time_s",
    "tokens_per_s",
    "tflops_per_device",
    "mfu_pct",
    "loss",
    "grad_norm",
    "peak_mem_gib",
)
_FORMATS = {
    "step_time_s": "{:.4f}",
    "tokens_per_s": "{:.1f}",
    "tflops_per_device": "{:.4f}",
    "mfu_pct": "{:.2f}",
    "loss": "{:.6f}",
    "grad_norm": "{:.4f}",
    "peak_mem_gib": "{:.3f}",
}
_LINE = re.compile(r"llmb iteration (?P<it>\d+)/(?P<total>\d+)(?P<rest>(?: \| [a-z_]+: \S+)*)")
_PAIR = re.compile(r" \| ([a-z_]+): (\S+)")


@dataclass(frozen=True)
class StepLine:
    iteration: int
    total: int
    values: dict[str, float]


def _fmt(name: str, value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return _FORMATS.get(name, "{:.6g}").format(value)


def format_step_line(iteration: int, total: int, **values: float) -> str:
    """The line for one step; ``values`` must use names from :data:`FIELDS` (missing ones are
    left out)."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown step-line fields: {sorted(unknown)}")
    parts = [f"{PREFIX}{iteration}/{total}"]
    parts += [f"{name}: {_fmt(name, float(values[name]))}" for name in FIELDS if name in values]
    return " | ".join(parts)


def parse_step_line(line: str) -> StepLine | None:
    """Parse one llmb step line found anywhere in ``line``; ``None`` if there is none."""
    m = _LINE.search(line)
    if m is None:
        return None
    values: dict[str, float] = {}
    for key, raw in _PAIR.findall(m.group("rest")):
        try:
            values[key] = float(raw)
        except ValueError:
            continue
    return StepLine(int(m.group("it")), int(m.group("total")), values)
