"""``llmb jobs``: the job store (list, show, export, saved sets, removal).

A typer sub-app of its own so the launcher side can add commands (e.g. a Slurm refresh) here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from llmb.cli.app import JSON_OPTION, app, console, print_json
from llmb.errors import LlmbError
from llmb.results.store import RUN_COLUMNS, Store

jobs_app = typer.Typer(
    name="jobs",
    help="The job store ($LLMB_HOME/jobs.db): imported and launched runs with their metrics.",
    no_args_is_help=True,
)
app.add_typer(jobs_app, name="jobs")

EXPORT_COLUMNS = tuple(c for c in RUN_COLUMNS if c not in ("stats", "metrics", "layout", "notes"))


def _num(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_runs(runs: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("run id", overflow="fold")
    for col in ("run", "job", "state", "status", "step s", "tok/s", "MFU", "finished"):
        table.add_column(col, justify="right" if col in ("step s", "tok/s", "MFU") else "left")
    for r in runs:
        size = f"{r['size']}-{r['proxy']}" if r.get("size") and r.get("proxy") else r.get("size")
        run = " ".join(str(v) for v in (r.get("workload"), size, r.get("dtype")) if v) or "-"
        if r.get("gpus"):
            run += f" x{r['gpus']}" + (" cpu" if r.get("device") == "cpu" else "")
        table.add_row(
            r["run_id"],
            run,
            r.get("job_id") or "-",
            r.get("state") or "-",
            r["status"],
            _num(r.get("step_time_s"), ".3f"),
            _num(r.get("tokens_per_s"), ".0f"),
            "-" if r.get("mfu") is None else f"{r['mfu'] * 100:.1f}%",
            (r.get("finished_at") or r["imported_at"])[:16].replace("T", " "),
        )
    console.print(table)


def _valid_status(value: Optional[str]) -> Optional[str]:
    statuses = ("OK", "INCOMPLETE", "INVALID", "NO_DATA")
    if value is not None and value.upper() not in statuses:
        raise LlmbError(f"unknown status {value!r} (choose from {', '.join(statuses)})")
    return value


@jobs_app.command("list")
def jobs_list(
    workload: Optional[str] = typer.Option(None, "--workload"),
    size: Optional[str] = typer.Option(None, "--size"),
    dtype: Optional[str] = typer.Option(None, "--dtype"),
    gpus: Optional[int] = typer.Option(None, "--gpus"),
    status: Optional[str] = typer.Option(None, "--status", callback=lambda v: _valid_status(v),
                                         help="OK, INCOMPLETE, INVALID or NO_DATA."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the newest N runs."),
    refresh: bool = typer.Option(True, "--refresh/--no-refresh", help="Ask Slurm about launched runs first."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List stored runs, oldest first (launched runs refreshed from Slurm first)."""
    store = Store.open()
    if refresh:
        _refresh(store, quiet=True)
    if workload:  # accept the catalog's aliases (llama31 = llama3.1); keep unknown names as given
        from llmb.catalog import default_catalog
        from llmb.errors import CatalogError

        try:
            workload = default_catalog().workload(workload).name
        except CatalogError:
            pass
    runs = store.runs(workload=workload, size=size, dtype=dtype, gpus=gpus,
                      status=status.upper() if status else None, limit=limit)
    if as_json:
        print_json(runs)
    elif not runs:
        console.print(f"no runs in {store.path}" + (" match" if any((workload, size, dtype, gpus, status)) else ""))
    else:
        print_runs(runs)


@jobs_app.command("show")
def jobs_show(
    run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
    steps: bool = typer.Option(False, "--steps", help="Include the per-step records."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Everything stored about one run."""
    store = Store.open()
    run = store.get(run_id)
    if steps:
        run["steps"] = store.steps(run["run_id"])
    if as_json:
        print_json(run)
        return
    for key, value in run.items():
        if key in ("stats", "metrics", "layout", "steps") and value is not None:
            value = json.dumps(value, default=str)
        console.print(f"[bold]{key:<20}[/]{value}", highlight=False, soft_wrap=True)


@jobs_app.command("export")
def jobs_export(
    fmt: str = typer.Option("csv", "--format", "-f", help="csv or json."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (default: stdout)."),
) -> None:
    """Export every stored run as CSV (flat columns) or JSON (everything)."""
    import csv
    import io

    fmt = fmt.lower()
    if fmt not in ("csv", "json"):
        raise LlmbError(f"unknown export format {fmt!r} (choose csv or json)")
    runs = Store.open().runs()
    if fmt == "json":
        text = json.dumps(runs, indent=2, default=str) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(EXPORT_COLUMNS), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in runs:
            writer.writerow({k: "" if r.get(k) is None else r[k] for k in EXPORT_COLUMNS})
        text = buf.getvalue()
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise LlmbError(f"cannot write {output}: {exc.strerror or exc}") from None
    console.print(f"wrote {len(runs)} run(s) to {output}")


@jobs_app.command("save-set")
def jobs_save_set(
    name: str = typer.Argument(..., help="Name of the set (replaced if it exists)."),
    run_ids: list[str] = typer.Argument(..., metavar="RUN_ID...", help="Runs in the set."),
) -> None:
    """Save a named set of runs, e.g. a reference to compare later runs against."""
    store = Store.open()
    ids = [store.get(r)["run_id"] for r in run_ids]
    store.save_set(name, ids)
    console.print(f"saved set {name!r} with {len(ids)} run(s)")


@jobs_app.command("rm")
def jobs_rm(run_id: str = typer.Argument(..., help="Run id.")) -> None:
    """Remove one run from the store."""
    store = Store.open()
    rid = store.get(run_id)["run_id"]
    store.delete(rid)
    console.print(f"removed {rid}")


def _refresh(store: Store, quiet: bool = False) -> list:
    from llmb.launch.tracking import refresh

    changes = refresh(store)
    if not quiet:
        for c in changes:
            console.print(f"job {c.job_id}: {c.old or '?'} -> {c.new}" + (f" ({c.reason})" if c.reason else ""),
                          highlight=False)
    return changes


@jobs_app.command("refresh")
def jobs_refresh(as_json: bool = JSON_OPTION) -> None:
    """Ask Slurm (squeue, sacct, sacct -c, scontrol) about launched runs; parse finished ones."""
    store = Store.open()
    changes = _refresh(store, quiet=as_json)
    if as_json:
        print_json([c.__dict__ for c in changes])
    elif not changes:
        console.print("no changes")


@jobs_app.command("log")
def jobs_log(
    ref: str = typer.Argument(..., help="Run id (or unique prefix) or Slurm job id."),
    tail: Optional[int] = typer.Option(None, "--tail", "-n", min=1, help="Only the last N lines."),
    follow: bool = typer.Option(False, "--follow", "-F", help="Keep printing as the job writes, until it ends."),
    interval_s: float = typer.Option(2.0, "--interval", min=0.1, help="Seconds between checks with --follow."),
) -> None:
    """Print a launched run's output (its slurm-<job>.out, else its log)."""
    import collections
    import time

    from llmb.launch.slurm import TERMINAL
    from llmb.launch.tracking import job_output

    store = Store.open()
    run = store.find_job(ref) if ref.isdigit() else None
    run = run or store.get(ref)

    def path_of(r: dict) -> Optional[Path]:
        out = job_output(r)
        if out is not None:
            return out
        log = Path(r.get("log_path") or "")
        return log if log.is_file() else None

    path = path_of(run)
    if path is None and not follow:
        raise LlmbError(f"no output yet for {run['run_id']} (job {run.get('job_id') or '-'}, state {run.get('state') or '-'})")
    offset = 0
    if path is not None:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            lines = collections.deque(fh, maxlen=tail) if tail else fh.readlines()
            offset = fh.tell()
        typer.echo("".join(lines), nl=False)
    if not follow:
        return
    if run.get("state") in TERMINAL or (not run.get("job_id") and run.get("state") != "RUNNING"):
        # Finished, or imported from a log: nothing more will be written.
        console.print(f"[dim]{run['run_id']}: {run.get('state') or 'imported'}, nothing more to follow[/]", highlight=False)
        return
    try:
        while True:
            time.sleep(interval_s)
            _refresh(store, quiet=True)
            run = store.get(run["run_id"])
            path = path or path_of(run)
            if path is not None and path.exists():
                with path.open("r", encoding="utf-8", errors="replace") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                    offset = fh.tell()
                if chunk:
                    typer.echo(chunk, nl=False)
            if run.get("state") in TERMINAL:
                console.print(f"[dim]job {run.get('job_id')} {run['state']}[/]", highlight=False)
                return
    except KeyboardInterrupt:
        return
