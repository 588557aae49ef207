"""Reports: Markdown tables in the reference layout and PNG plots, from job-store rows."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmb.catalog.loader import Catalog
from llmb.errors import LlmbError
from llmb.plan.layout import LAYOUT_KNOBS
from llmb.report.plots import plot_scaling, plot_steps
from llmb.report.tables import Group, group_markdown, group_runs
from llmb.results.compare import DEFAULT_TOLERANCE, baseline_for, compare, default_reference

__all__ = ["Group", "group_markdown", "group_runs", "plot_scaling", "plot_steps", "write_report"]


def _window(text: str | None) -> tuple[int, int] | None:
    m = re.fullmatch(r"(\d+):(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _predict(catalog: Catalog, run: dict[str, Any]) -> tuple[float, float, float] | None:
    """The predictor's (step time s, tokens/s, MFU) for a run of a catalog recipe on GPUs;
    ``None`` for proxies, CPU runs and anything the catalog cannot plan."""
    from llmb.plan.calibrate import stored_efficiency
    from llmb.plan.forecast import forecast
    from llmb.plan.recipe import resolve

    if run.get("proxy") or run.get("device") == "cpu":
        return None
    try:
        layout = {k: v for k, v in (run.get("layout") or {}).items() if k in LAYOUT_KNOBS}
        recipe = resolve(catalog, run["workload"], run["size"], run.get("dtype"), int(run["gpus"]),
                         run.get("gpu_type"), layout or None)
        f = forecast(recipe, stored_efficiency())
    except (LlmbError, KeyError, TypeError, ValueError):
        return None
    return f.step_time_s, f.metrics.tokens_per_s, f.metrics.mfu


def write_report(
    runs: list[dict[str, Any]],
    steps_for: Callable[[dict[str, Any]], list[dict[str, Any]]],
    catalog: Catalog,
    out_dir: Path,
    tolerance: float = DEFAULT_TOLERANCE,
    plots: bool = True,
    release: str | None = None,
) -> Path:
    """Write ``report.md`` and its PNGs into ``out_dir``; returns the Markdown file."""
    if not runs:
        raise LlmbError("nothing to report: no runs")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LlmbError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    groups, unknown = group_runs(runs)
    parts = ["# llmb performance report", ""]
    for g in groups:
        for n, run in g.runs.items():
            published, _ = baseline_for(run, catalog, release)
            g.baselines[n] = published
            ref, why = (published, None) if published is not None else default_reference(run, catalog, runs, release)
            g.comparisons[n] = compare(run, ref, tolerance, why)
            prediction = _predict(catalog, run)
            if prediction is not None:
                g.predicted[n] = prediction
        parts += [f"## {g.title} on {g.where}", "", group_markdown(g, tolerance), ""]
        if plots:
            png = plot_scaling(g, out_dir / f"{g.slug}_scaling.png")
            parts += [f"![{g.title}: throughput and MFU vs {g.units}]({png.name})", ""]
            for n in g.gpu_counts:
                run = g.runs[n]
                png = plot_steps(
                    f"{g.title}, {n}x {g.where}: step time ({run['run_id']})",
                    steps_for(run),
                    _window(run.get("window")),
                    out_dir / f"{g.slug}_{n}gpus_steps.png",
                )
                if png is not None:
                    parts += [f"![step time per iteration, {n}x {g.units}]({png.name})", ""]
    if unknown:
        parts += ["## Runs without a workload", "", "| run | format | status | step time (s) |", "|---|---|---|---:|"]
        for r in unknown:
            st = r.get("step_time_s")
            parts.append(f"| `{r['run_id']}` | {r.get('format') or 'n/a'} | {r.get('status') or 'n/a'} | "
                         f"{'n/a' if st is None else f'{st:.3f}'} |")
        parts.append("")
        if plots:
            for r in unknown:
                png = plot_steps(f"step time ({r['run_id']})", steps_for(r), _window(r.get("window")),
                                 out_dir / f"{r['run_id']}_steps.png")
                if png is not None:
                    parts += [f"![step time per iteration]({png.name})", ""]
    md = out_dir / "report.md"
    md.write_text("\n".join(parts))
    return md
