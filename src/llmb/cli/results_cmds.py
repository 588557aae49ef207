"""Results commands: parse, import, compare, report (and the ``jobs`` sub-app, registered from
:mod:`llmb.cli.jobs_cmds`)."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from llmb.catalog import default_catalog
from llmb.cli.app import JSON_OPTION, app, console, print_json
from llmb.errors import LlmbError

if TYPE_CHECKING:
    from llmb.results.analysis import RunResult
    from llmb.results.identity import RunSpec

def _valid_window(value: str | None) -> str | None:
    if value is not None:
        from llmb.results.stats import parse_window

        parse_window(value)  # one line naming the value when it is not A:B with A <= B
    return value


def _valid_convention(value: str) -> str:
    from llmb.plan.flops import CONVENTIONS

    if value not in CONVENTIONS:
        raise LlmbError(f"unknown FLOPs convention {value!r} (choose from {', '.join(CONVENTIONS)})")
    return value


WINDOW_OPTION = typer.Option(
    None, "--window", "-w", metavar="A:B", callback=_valid_window,
    help="Iterations to average, inclusive, numbered as the log prints them "
    "(default 11:44 of 50 steps, scaled to the run's length).",
)
FORMAT_OPTION = typer.Option("auto", "--format", "-f", help="Log format (default: detect).")
RANK_OPTION = typer.Option(None, "--rank", help="Rank to read in multi-rank output (default: the lowest).")
WORKLOAD_OPTION = typer.Option(None, "--workload", help="Catalog workload (default: from the folder name).")
SIZE_OPTION = typer.Option(None, "--size", help="Model size, e.g. 8b.")
DTYPE_OPTION = typer.Option(None, "--dtype", help="bf16, fp8 or fp32.")
GPUS_OPTION = typer.Option(None, "--gpus", min=1, help="Total GPUs of the run.")
GPU_TYPE_OPTION = typer.Option(None, "--gpu-type", help="GPU type (default: the workload's).")
LAYOUT_OPTION = typer.Option(
    None, "--layout", metavar="K=V,...", help="Layout knobs that differ from the catalog's row, e.g. gbs=256,tp=2."
)
CONVENTION_OPTION = typer.Option("recipe", "--convention", callback=_valid_convention,
                                 help="FLOPs convention for MFU: recipe, megatron or 6n.")
CSV_OPTION = typer.Option(False, "--csv", help="Print CSV instead of a table.")


def _spec(workload, size, dtype, gpus, gpu_type, layout) -> RunSpec:
    """What the command line says about the runs (a layout as ``TP4,PP2,...``)."""
    # The results package is imported when a results command runs, not for every llmb command.
    from llmb.results.identity import RunSpec, parse_layout

    return RunSpec(workload, size, dtype, gpus, gpu_type, layout=parse_layout(layout))


def analyze_paths(
    paths: list[str], *, window: str | None, fmt: str, rank: int | None, spec: RunSpec, convention: str
) -> list[RunResult]:
    from llmb.results.analysis import analyze_logs
    from llmb.results.stats import parse_window

    return analyze_logs(
        paths, window=parse_window(window) if window else None, fmt=fmt, rank=rank, spec=spec, convention=convention
    )


def jsonable(obj: Any) -> Any:
    """Non-finite floats as the strings "nan", "inf", "-inf": JSON has no NaN, and null would
    read as "not logged" while a NaN loss is exactly what made a run INVALID."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if obj != obj else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def write_csv(rows: list[dict[str, Any]], fields: tuple[str, ...] | list[str]) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


_STATUS_STYLE = {"OK": "green", "INCOMPLETE": "yellow", "INVALID": "red", "NO_DATA": "red"}


def print_results(results: list[RunResult]) -> None:
    """One block per log (readable in 80 columns; --csv gives the table)."""
    from llmb.results.analysis import result_row
    from llmb.results.compare import compare, recipe_baseline

    for res in results:
        row = result_row(res)
        status = row["status"]
        console.print(
            f"[bold]{res.parsed.path}[/]  {row['format'] or '-'}  [{_STATUS_STYLE[status]}]{status}[/]",
            highlight=False,
        )
        run = f"{res.spec.label()} ({res.spec.source})" if res.spec.workload else "unknown (give --workload/--size/--gpus)"
        every = f", logged every {row['interval']} iterations" if row["interval"] > 1 else ""
        found = f"{row['present']} of {row['expected']} steps found{every}; {row['steps_found']} steps in the log"
        lines = [("run", run), ("window", f"{row['window']}: {found}")]
        if row["step_time_s"] is not None:
            std = row["step_time_std_s"]
            spread = f" ± {std:.3f} (sample std)" if std is not None else ""
            minmax = (
                f"; min {row['step_time_min_s']:.3f}, median {row['step_time_median_s']:.3f}, max {row['step_time_max_s']:.3f}"
                if row["step_time_min_s"] is not None
                else f" ({(res.metrics or {}).get('step_time_source', 'log')})"
            )
            lines.append(("step time", f"{row['step_time_s']:.3f} s{spread}{minmax}"))
        perf = []
        if row["tflops_per_gpu"] is not None:
            perf.append(f"TFLOP/s/GPU {row['tflops_per_gpu']:.1f} ({row['tflops_per_gpu_source']})")
        if row["tokens_per_s"] is not None:
            perf.append(f"tokens/s {row['tokens_per_s']:.0f}")
        elif row["tokens_per_s_per_gpu"] is not None:
            perf.append(f"tokens/s/GPU {row['tokens_per_s_per_gpu']:.0f}")
        if row["mfu"] is not None:
            perf.append(f"MFU {_pct(row['mfu'])} ({row['convention']} FLOPs)")
        if row["days_per_1t_tokens"] is not None:
            perf.append(f"days/1T {row['days_per_1t_tokens']:.2f}")
        if perf:
            lines.append(("throughput", ", ".join(perf)))
        ref = recipe_baseline(res.recipe) if res.recipe else None
        if ref is not None:
            c = compare(row, ref)
            if c.throughput_ratio is not None:
                lines.append(("baseline", f"{ref.step_time_s} s/step; {c.throughput_ratio:.1%} of its throughput: {c.verdict}"
                              + ("" if row["status"] == "OK" else f" (run {row['status']})")))
        for key, value in lines:
            console.print(f"  {key:<11}{value}", highlight=False)
        for note in list(res.stats.reasons) + list(res.parsed.notes) + list(res.notes):
            console.print(f"  [dim]- {note}[/]", highlight=False)


@app.command("parse")
def parse_cmd(
    paths: list[str] = typer.Argument(..., metavar="PATH...", help="Log files or experiment folders."),
    window: Optional[str] = WINDOW_OPTION,
    fmt: str = FORMAT_OPTION,
    rank: Optional[int] = RANK_OPTION,
    workload: Optional[str] = WORKLOAD_OPTION,
    size: Optional[str] = SIZE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    gpus: Optional[int] = GPUS_OPTION,
    gpu_type: Optional[str] = GPU_TYPE_OPTION,
    layout: Optional[str] = LAYOUT_OPTION,
    convention: str = CONVENTION_OPTION,
    steps: bool = typer.Option(False, "--steps", help="With --json: include every parsed step."),
    as_json: bool = JSON_OPTION,
    as_csv: bool = CSV_OPTION,
) -> None:
    """Parse training logs of any supported framework: window statistics, status and metrics."""
    if as_json and as_csv:
        raise LlmbError("choose one of --json and --csv")
    spec = _spec(workload, size, dtype, gpus, gpu_type, layout)
    results = analyze_paths(paths, window=window, fmt=fmt, rank=rank, spec=spec, convention=convention)
    if as_json:
        print_json(jsonable([r.as_dict(with_steps=steps) for r in results]))
    elif as_csv:
        from llmb.results.analysis import ROW_FIELDS, result_row

        write_csv([result_row(r) for r in results], ROW_FIELDS)
    else:
        print_results(results)


@app.command("import")
def import_cmd(
    paths: list[str] = typer.Argument(..., metavar="PATH...", help="Log files or experiment folders."),
    window: Optional[str] = WINDOW_OPTION,
    fmt: str = FORMAT_OPTION,
    rank: Optional[int] = RANK_OPTION,
    workload: Optional[str] = WORKLOAD_OPTION,
    size: Optional[str] = SIZE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    gpus: Optional[int] = GPUS_OPTION,
    gpu_type: Optional[str] = GPU_TYPE_OPTION,
    layout: Optional[str] = LAYOUT_OPTION,
    convention: str = CONVENTION_OPTION,
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Cluster name to record."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Run id (one log only; default: derived from the path)."),
    job_id: Optional[str] = typer.Option(None, "--job-id", help="Scheduler job id to record."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Parse logs and store the runs in the job store ($LLMB_HOME/jobs.db)."""
    from llmb.results.analysis import run_id_for, store_row
    from llmb.results.store import Store

    spec = _spec(workload, size, dtype, gpus, gpu_type, layout)
    results = analyze_paths(paths, window=window, fmt=fmt, rank=rank, spec=spec, convention=convention)
    if run_id is not None and len(results) != 1:
        raise LlmbError(f"--run-id names one run but {len(results)} logs were found")
    store = Store.open()
    done, rows = [], []
    for res in results:
        rid = run_id or run_id_for(res)
        rows.append((store_row(res, rid, cluster=cluster, job_id=job_id), res.parsed.records))
        done.append({"run_id": rid, "status": res.stats.status.value, "path": res.parsed.path})
    store.put_many(rows)  # all of them, or (disk full, ...) none: the error says which
    if as_json:
        print_json(done)
        return
    for d in done:
        console.print(f"imported {d['run_id']}  {d['status']}  ({d['path']})", highlight=False)
    console.print(f"[dim]job store: {store.path}[/]", highlight=False)


def _runs_from_args(
    args: list[str], spec: RunSpec, window: str | None, convention: str, steps: dict[str, list[dict[str, Any]]] | None = None
) -> list[dict[str, Any]]:
    """Job-store rows for run ids, and rows made on the fly for log paths (their steps go to
    ``steps`` when given)."""
    from llmb.results.analysis import run_id_for, store_row
    from llmb.results.store import Store

    store = Store.open()
    if not args:
        rows = store.runs()
        if not rows:
            raise LlmbError(f"the job store ({store.path}) holds no runs; name logs or run ids, or llmb import some")
        return rows
    rows = []
    for arg in args:
        if Path(arg).exists():
            for res in analyze_paths([arg], window=window, fmt="auto", rank=None, spec=spec, convention=convention):
                rows.append(store_row(res, run_id_for(res)))
                if steps is not None:
                    steps[rows[-1]["run_id"]] = [r.as_dict() for r in res.parsed.records]
        else:
            rows.append(store.get(arg))
    return rows


_VERDICT_STYLE = {"PASS": "green", "FAIL": "red", "N/A": "yellow", "NOT COMPARABLE": "yellow"}
_METRIC_FMT = {"step_time_s": ".3f", "tokens_per_s": ".0f", "mfu": ".4f", "days_per_1t_tokens": ".2f"}


RELEASE_OPTION = typer.Option(None, "--release", help="Recipe release of the baselines (e.g. 25.02; default: the newest "
                              "published at each run's scale).")


def _check_release(catalog: Any, workload: Optional[str], size: Optional[str], release: Optional[str]) -> None:
    """A --release the named workload (and size) does not publish is one line listing those it does."""
    if release is None or workload is None:
        return
    from llmb.plan.recipe import check_release

    wl = catalog.workload(workload)
    sizes = [catalog.size(wl, size)[0]] if size else list(wl.sizes)
    known = sorted({r for s in sizes for r in wl.releases(s)})
    if not any(release_ok(wl, s, release, check_release) for s in sizes):
        raise LlmbError(f"{wl.name}{' ' + sizes[0] if size else ''} has no release {release!r} "
                        f"(releases: {', '.join(known) or 'none'})")


def release_ok(wl: Any, size: str, release: str, check: Any) -> bool:
    try:
        check(wl, size, release)
        return True
    except LlmbError:
        return False


@app.command("compare")
def compare_cmd(
    runs: Optional[list[str]] = typer.Argument(None, metavar="[RUN_ID|LOG]...", help="Runs to judge (default: every stored run)."),
    against: Optional[str] = typer.Option(None, "--against", help="Compare with this stored run instead of the baselines."),
    set_name: Optional[str] = typer.Option(None, "--set", help="Compare with the matching run of this saved set."),
    tolerance: float = typer.Option(0.95, "--tolerance", help="Pass when throughput >= this fraction of the reference."),
    show_history: bool = typer.Option(False, "--history", help="Also flag regressions along each configuration's stored history."),
    window: Optional[str] = WINDOW_OPTION,
    workload: Optional[str] = WORKLOAD_OPTION,
    size: Optional[str] = SIZE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    gpus: Optional[int] = GPUS_OPTION,
    gpu_type: Optional[str] = GPU_TYPE_OPTION,
    layout: Optional[str] = LAYOUT_OPTION,
    convention: str = CONVENTION_OPTION,
    release: Optional[str] = RELEASE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Judge runs against the catalog's baselines (default), another run, or a saved set."""
    from llmb.results import compare as cmp
    from llmb.results.store import Store

    if against and set_name:
        raise LlmbError("choose one of --against and --set")
    if not 0 < tolerance <= 10:
        raise LlmbError(f"--tolerance must be a fraction such as 0.95, got {tolerance}")
    _check_release(default_catalog(), workload, size, release)
    spec = _spec(workload, size, dtype, gpus, gpu_type, layout)
    rows = _runs_from_args(list(runs or []), spec, window, convention)
    if against:
        other = Store.open().get(against)
        ref = cmp.run_reference(other)
        reference_for = lambda run: ref  # noqa: E731
    elif set_name:
        members = Store.open().set_runs(set_name)
        reference_for = lambda run: cmp.set_reference(run, members, set_name)  # noqa: E731
    else:
        catalog = default_catalog()
        stored = Store.open().runs()
        reference_for = lambda run: cmp.default_reference(run, catalog, stored, release)  # noqa: E731
    comparisons = cmp.compare_all(rows, reference_for, tolerance)
    hist = []
    if show_history:
        configs = {cmp.config_of(r) for r in rows}
        stored = [r for r in Store.open().runs() if cmp.config_of(r) in configs]
        hist = cmp.history(stored, tolerance)
    if as_json:
        print_json(jsonable({"tolerance": tolerance, "comparisons": [c.as_dict() for c in comparisons],
                             "history": [h.as_dict() for h in hist]}))
        return
    for c in comparisons:
        tr = "" if c.throughput_ratio is None else f" {c.throughput_ratio:.1%} of its throughput"
        console.print(
            f"[bold]{c.run_id}[/] ({c.config}, {c.status}) vs {c.reference or '-'}: "
            f"[{_VERDICT_STYLE[c.verdict]}]{c.verdict}[/]{tr}",
            highlight=False,
        )
        if c.reference:
            console.print(f"  [dim]{'metric':<20}{'measured':>12}{'reference':>12}{'ratio':>8}[/]", highlight=False)
            for r in c.rows:
                if r.measured is None and r.reference is None:
                    continue
                f = _METRIC_FMT[r.metric]
                console.print(
                    f"  {r.metric:<20}{_fmt(r.measured, f):>12}{_fmt(r.reference, f):>12}"
                    f"{'' if r.ratio is None else format(r.ratio, '.3f'):>8}",
                    highlight=False,
                )
        for note in c.notes:
            console.print(f"  [dim]- {note}[/]", highlight=False)
    if hist:
        console.print(f"[bold]history[/] (each run vs the best earlier OK run of its configuration, flag below {tolerance:.0%})")
        config = None
        for h in sorted(hist, key=lambda h: h.config):  # stable: time order within a configuration
            if h.config != config:
                config = h.config
                console.print(f"  {config}", highlight=False)
            flag = "  [red]REGRESSION[/]" if h.regression else ""
            ratio = "first" if h.ratio is None else f"{h.ratio:.1%}"
            console.print(f"    {(h.when or '')[:16].replace('T', ' ')}  {ratio:>7}  {h.run_id}{flag}", highlight=False)


@app.command("report")
def report_cmd(
    runs: Optional[list[str]] = typer.Argument(None, metavar="[RUN_ID|LOG]...", help="Runs to report (default: every stored run)."),
    out: Path = typer.Option(Path("llmb-report"), "--out", "-o", help="Folder for report.md and its PNGs."),
    workload: Optional[str] = WORKLOAD_OPTION,
    size: Optional[str] = SIZE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    gpus: Optional[int] = GPUS_OPTION,
    gpu_type: Optional[str] = GPU_TYPE_OPTION,
    window: Optional[str] = WINDOW_OPTION,
    layout: Optional[str] = LAYOUT_OPTION,
    convention: str = CONVENTION_OPTION,
    tolerance: float = typer.Option(0.95, "--tolerance", help="Pass when throughput >= this fraction of the baseline."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw PNG plots."),
    release: Optional[str] = RELEASE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Markdown tables in the reference layout plus PNG plots (scaling, step time per iteration).

    With no RUN/LOG, stored runs are reported, filtered by --workload/--size/--dtype/--gpus.
    Given logs, --workload/--size/... name the run as for `llmb parse`.
    """
    from llmb.report import write_report
    from llmb.results.store import Store

    if not 0 < tolerance <= 10:
        raise LlmbError(f"--tolerance must be a fraction such as 0.95, got {tolerance}")
    steps: dict[str, list[dict[str, Any]]] = {}
    catalog = default_catalog()
    _check_release(catalog, workload, size, release)
    if runs:
        rows = _runs_from_args(list(runs), _spec(workload, size, dtype, gpus, gpu_type, layout), window, convention, steps)
    else:
        store = Store.open()
        wl = catalog.workload(workload).name if workload else None
        rows = store.runs(workload=wl, size=size, dtype=dtype, gpus=gpus, gpu_type=gpu_type)
        if not rows:
            raise LlmbError(f"no stored runs match in {store.path}; llmb import some logs first")
    store = Store.open()

    def steps_for(run: dict[str, Any]) -> list[dict[str, Any]]:
        return steps[run["run_id"]] if run["run_id"] in steps else store.steps(run["run_id"])

    md = write_report(rows, steps_for, catalog, out, tolerance=tolerance, plots=plots, release=release)
    files = sorted(str(p) for p in md.parent.glob("*.png")) if plots else []
    if as_json:
        print_json({"markdown": str(md), "plots": files})
        return
    typer.echo(md.read_text())  # raw Markdown: no wrapping, so it pastes cleanly
    console.print(f"[dim]wrote {md}" + (f" and {len(files)} plot(s)" if files else "") + "[/]", highlight=False)


# The jobs sub-app lives in its own module (the launcher side extends it).
from llmb.cli import jobs_cmds  # noqa: E402,F401
