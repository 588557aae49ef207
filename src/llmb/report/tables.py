"""Markdown tables in the reference documents' layout: one table per workload, size and dtype;
rows are step time, tokens/s, MFU and days to train 1T tokens; columns are GPU counts.

A column shows the newest run with status OK at that GPU count (the newest of any status if
none is OK, marked with its status). Below it, the same columns against the published
baseline: baseline step time and the throughput ratio with its verdict.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from llmb.results.compare import DEFAULT_TOLERANCE, Comparison, Reference


@dataclass
class Group:
    """Runs of one workload, size (and proxy), dtype and GPU type (or CPU), one chosen run per
    GPU count."""

    workload: str
    size: str
    dtype: str
    gpu_type: str
    proxy: str | None = None
    device: str | None = None
    #: GPU count -> chosen run (a job-store row)
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: GPU count -> the comparison of that run with its baseline
    comparisons: dict[int, Comparison] = field(default_factory=dict)
    baselines: dict[int, Reference | None] = field(default_factory=dict)
    #: GPU count -> the predictor's forecast (step_time_s, tokens_per_s, mfu), when it has one
    predicted: dict[int, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def title(self) -> str:
        size = f"{self.size}-{self.proxy}" if self.proxy else self.size
        return f"{self.workload} {size} {self.dtype.upper()}"

    @property
    def where(self) -> str:
        """What the runs ran on: ``H100``, or ``CPU`` for CPU ranks."""
        return "CPU" if self.device == "cpu" else self.gpu_type.upper()

    @property
    def units(self) -> str:
        return "CPU ranks" if self.device == "cpu" else f"{self.gpu_type.upper()} GPUs"

    @property
    def slug(self) -> str:
        size = f"{self.size}-{self.proxy}" if self.proxy else self.size
        where = "cpu" if self.device == "cpu" else self.gpu_type
        return f"{self.workload}_{size}_{self.dtype}_{where}".replace("/", "-")

    @property
    def gpu_counts(self) -> list[int]:
        return sorted(self.runs)


def group_runs(runs: list[dict[str, Any]]) -> tuple[list[Group], list[dict[str, Any]]]:
    """Groups of identified runs (oldest-first input), and the runs without an identity."""
    groups: dict[tuple[Any, ...], Group] = {}
    unknown = []
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        if not (r.get("workload") and r.get("size") and r.get("gpus")):
            unknown.append(r)
            continue
        key = (r["workload"], r["size"], r.get("proxy"), r.get("dtype") or "?", r.get("gpu_type") or "?",
               r.get("device"))
        by_key[(*key, r["gpus"])].append(r)
    for (w, s, p, d, t, dev, g), rs in sorted(by_key.items(), key=lambda kv: tuple(map(str, kv[0][:6])) + (kv[0][6],)):
        ok = [r for r in rs if r.get("status") == "OK"]
        group = groups.setdefault((w, s, p, d, t, dev), Group(w, s, d, t, proxy=p, device=dev))
        group.runs[g] = (ok or rs)[-1]
    return list(groups.values()), unknown


def _cell(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _row(label: str, cells: list[str]) -> str:
    return "| " + label + " | " + " | ".join(cells) + " |"


def group_markdown(group: Group, tolerance: float = DEFAULT_TOLERANCE) -> str:
    counts = group.gpu_counts
    cols = [f"{n}x {group.units}" for n in counts]
    head = _row(group.title, cols)
    rule = "|---|" + "|".join(":---:" for _ in counts) + "|"
    runs = [group.runs[n] for n in counts]

    def mark(r: dict[str, Any], text: str) -> str:
        return text if r.get("status") == "OK" else f"{text} ({r.get('status')})"

    lines = [
        head,
        rule,
        _row("Training step time (seconds per step)", [mark(r, _cell(r.get("step_time_s"), ".2f")) for r in runs]),
        _row("Throughput in tokens per second", [_cell(r.get("tokens_per_s"), ".0f") for r in runs]),
        _row("Model flops utilization", [_pct(r.get("mfu")) for r in runs]),
        _row("Time to train 1T tokens in days", [_cell(r.get("days_per_1t_tokens"), ".2f") for r in runs]),
    ]
    conventions = sorted({str(r.get("convention")) for r in runs if r.get("convention")})
    out = ["\n".join(lines), ""]
    if conventions:
        over = ("the CPU GEMM ceiling measured on the host" if group.device == "cpu"
                else f"the dense {group.dtype.upper()} peak")
        out.append(f"MFU with the `{'`, `'.join(conventions)}` FLOPs convention, over {over}.")
        out.append("")
    if any(group.baselines.get(n) for n in counts):
        bl = [group.baselines.get(n) for n in counts]
        comps = [group.comparisons.get(n) for n in counts]
        ratio_cells = []
        for c in comps:
            if c is None or c.throughput_ratio is None:
                ratio_cells.append("n/a")
            else:
                ratio_cells.append(f"{c.throughput_ratio:.1%} {c.verdict}")
        vs = [
            _row(f"{group.title} vs published", cols),
            rule,
            _row("Baseline release", [(b.release or "n/a") if b else "n/a" for b in bl]),
            _row("Baseline step time (seconds per step)", [_cell(b.step_time_s if b else None, ".2f") for b in bl]),
            _row("Baseline tokens per second", [_cell(b.tokens_per_s if b else None, ".0f") for b in bl]),
            _row("Baseline model flops utilization", [_pct(b.mfu if b else None) for b in bl]),
            _row(f"Measured / baseline throughput (pass at {tolerance:.0%})", ratio_cells),
        ]
        out += ["\n".join(vs), ""]
    if group.predicted:
        pred = [group.predicted.get(n) for n in counts]
        measured = [r.get("step_time_s") for r in runs]
        out += ["\n".join([
            _row(f"{group.title} predicted", cols),
            rule,
            _row("Predicted step time (seconds per step)", [_cell(p[0] if p else None, ".2f") for p in pred]),
            _row("Predicted tokens per second", [_cell(p[1] if p else None, ".0f") for p in pred]),
            _row("Predicted model flops utilization", [_pct(p[2] if p else None) for p in pred]),
            _row("Measured / predicted step time", [
                _cell(m / p[0] if (p and m) else None, ".3f") for p, m in zip(pred, measured)]),
        ]), "", "Predicted by `llmb predict` (calibrated step-time model; see `llmb calibrate`).", ""]
    others = [(n, c) for n, c in ((n, group.comparisons.get(n)) for n in counts)
              if c is not None and not group.baselines.get(n)]
    for n, c in others:
        ratio = "" if c.throughput_ratio is None else f" {c.throughput_ratio:.1%} of its throughput:"
        why = f" ({'; '.join(c.notes)})" if c.notes else ""
        out.append(f"- {n}x: vs {c.reference or 'no reference'}:{ratio} {c.verdict}{why}")
    if others:
        out.append("")
    used = ", ".join(f"{n}x: `{group.runs[n]['run_id']}`" for n in counts)
    out.append(f"Runs: {used}.")
    return "\n".join(out)
