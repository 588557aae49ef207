"""PNG plots with matplotlib's Agg canvas (no display, no pyplot global state).

* scaling: tokens/s and MFU against GPU count, measured next to the published baseline and the
  predictor's forecast;
* steps: step time per iteration with the statistics window shaded and its mean drawn. Warm-up
  steps are often 5-50x the steady state; the y axis is fitted to the window and points above
  it are drawn at the top edge with their value written next to them.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from llmb.report.tables import Group

MEASURED = "#1f77b4"
BASELINE = "#ff7f0e"
PREDICTED = "#2ca02c"


def _new(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _gpu_axis(ax: Any, counts: list[int]) -> None:
    if len(counts) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(counts)
    ax.set_xticklabels([str(c) for c in counts])
    ax.minorticks_off()
    ax.set_xlabel("GPUs")
    ax.grid(True, alpha=0.3)


def plot_scaling(group: Group, path: Path) -> Path:
    """Tokens/s and MFU against GPU count for one group; returns ``path``. One GPU count is
    drawn as bars (measured next to the baseline and the prediction), several as lines."""
    counts = group.gpu_counts
    fig = _new(10, 4)
    ax_t, ax_m = fig.subplots(1, 2)
    series = {
        "measured": ([group.runs[n].get("tokens_per_s") for n in counts], [group.runs[n].get("mfu") for n in counts]),
        "baseline": (
            [b.tokens_per_s if (b := group.baselines.get(n)) else None for n in counts],
            [b.mfu if (b := group.baselines.get(n)) else None for n in counts],
        ),
        "predicted": (
            [p[1] if (p := group.predicted.get(n)) else None for n in counts],
            [p[2] if (p := group.predicted.get(n)) else None for n in counts],
        ),
    }
    colors = {"measured": MEASURED, "baseline": BASELINE, "predicted": PREDICTED}
    if len(counts) == 1:
        _bars(ax_t, ax_m, series, colors, f"{counts[0]}x {group.units}")
    else:
        _lines(ax_t, ax_m, counts, series, colors)
        for ax in (ax_t, ax_m):
            _gpu_axis(ax, counts)
            ax.set_xlabel(group.units)
    ax_t.set_title("Throughput")
    ax_t.set_ylabel("tokens/s (whole job)")
    ax_t.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax_m.set_title("Model FLOPs utilization")
    ax_m.set_ylabel("MFU (%)")
    ax_m.set_ylim(0, max([100.0 * (m or 0) for m in series["measured"][1] + series["baseline"][1]
                          + series["predicted"][1]] + [10.0]) * 1.25)
    for ax in (ax_t, ax_m):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right")
    fig.suptitle(f"{group.title} on {group.where}: measured vs published baseline"
                 + (" and prediction" if group.predicted else ""))
    fig.savefig(path)
    return path


def _bars(ax_t: Any, ax_m: Any, series: dict, colors: dict, label: str) -> None:
    """One scale: a bar per series (a lone dot says nothing), values written on them."""
    names = [n for n in ("measured", "baseline", "predicted") if series[n][0][0] is not None or series[n][1][0] is not None]
    for ax, idx, scale, fmt in ((ax_t, 0, 1.0, "{:,.0f}"), (ax_m, 1, 100.0, "{:.1f}%")):
        values = [(n, series[n][idx][0]) for n in names if series[n][idx][0] is not None]
        for i, (name, v) in enumerate(values):
            bar = ax.bar(i, v * scale, color=colors[name], width=0.6)  # named below it: no legend
            ax.bar_label(bar, labels=[fmt.format(v * scale)], padding=2, fontsize=8)
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels([n for n, _ in values])
        ax.set_xlabel(label)
        ax.grid(True, axis="y", alpha=0.3)
        if idx == 0:
            ax.set_ylim(0, max([v for _, v in values] + [1.0]) * 1.25)


def _lines(ax_t: Any, ax_m: Any, counts: list[int], series: dict, colors: dict) -> None:
    # The measured series last and on top: it must stay visible where it meets the baseline.
    for name, marker, z in (("baseline", "s", 2), ("predicted", "^", 2), ("measured", "o", 3)):
        tokens, mfu = series[name]
        style = dict(marker=marker, color=colors[name], label=name, zorder=z, markersize=7 if z == 3 else 9,
                     markerfacecolor=colors[name] if z == 3 else "none", linewidth=2 if z == 3 else 1.2)
        pts = [(n, t) for n, t in zip(counts, tokens) if t is not None]
        if pts:
            ax_t.plot(*zip(*pts), **style)
        pts = [(n, m * 100) for n, m in zip(counts, mfu) if m is not None]
        if pts:
            ax_m.plot(*zip(*pts), **style)
    measured = [(n, t) for n, t in zip(counts, series["measured"][0]) if t is not None]
    if len(measured) > 1:
        # Weak scaling keeps the per-GPU work constant: perfect scaling is a straight line.
        n0, t0 = measured[0]
        ax_t.plot(counts, [t0 * n / n0 for n in counts], linestyle="--", linewidth=1.5, color="#444444",
                  zorder=1, label="linear from smallest")
    ax_t.set_yscale("log")
    ax_t.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax_t.yaxis.set_minor_formatter(NullFormatter())

def plot_steps(title: str, steps: list[dict[str, Any]], window: tuple[int, int] | None, path: Path) -> Path | None:
    """Step time per iteration with the window shaded; ``None`` if there are no step times.

    The y axis is fitted to the window's values (the tick labels say where it starts); steps
    outside that range are drawn as triangles on the edge and listed with their values.
    """
    pts = [(s["iteration"], s["step_time_s"]) for s in steps
           if s.get("step_time_s") is not None and math.isfinite(s["step_time_s"])]
    if not pts:
        return None
    its, times = zip(*pts)
    inside = [t for i, t in pts if window and window[0] <= i <= window[1]]
    ref = [t for t in inside if t > 0] or [t for t in times if t > 0] or list(times)
    lo, hi = min(ref), max(ref)
    med = statistics.median(ref)
    span = max(hi - lo, 0.02 * abs(med), 1e-9)
    bottom, top = max(0.0, lo - span), hi + span
    fig = _new(10, 4)
    ax = fig.subplots()
    if window:
        ax.axvspan(window[0] - 0.5, window[1] + 0.5, color="#2ca02c", alpha=0.12, label=f"window {window[0]}:{window[1]}")
    ax.plot(its, [min(max(t, bottom), top) for t in times], marker=".", color=MEASURED, linewidth=1, label="step time")
    off = [(i, t) for i, t in pts if t > top or t < bottom]
    for i, t in off:
        ax.plot([i], [top if t > top else bottom], marker="^" if t > top else "v", color="#d62728", linestyle="none")
    if off:
        listed = ", ".join(f"{i}: {t:.4g} s" for i, t in off[:8]) + (f" (+{len(off) - 8} more)" if len(off) > 8 else "")
        ax.text(0.99, 0.97, f"off scale: {listed}", transform=ax.transAxes, va="top", ha="right", fontsize=8,
                color="#d62728", bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    if inside:
        mean = statistics.fmean(inside)
        ax.hlines(mean, window[0], window[1], colors="#2ca02c", linestyles="--", label=f"window mean {mean:.3f} s")
    ax.set_ylim(bottom, top)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration (as logged)")
    ax.set_ylabel("step time (s)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path)
    return path
