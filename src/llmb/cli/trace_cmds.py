"""``llmb trace``: summarize collectives from an NCCL log or a profiler trace."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from llmb.cli.app import JSON_OPTION, app, console, print_json
from llmb.results.collectives import summarize_path


@app.command()
def trace(
    path: Path = typer.Argument(..., help="An NCCL INFO log (any size), a torch.profiler chrome trace (.json[.gz]), "
                                "or a run's experiment folder (its profiles/ and nccl/)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Summarize collectives (type, count, bytes, time) of a run."""
    summary = summarize_path(path)
    if as_json:
        print_json(summary.as_dict())
        return
    files = f", {summary.files} files" if summary.files > 1 else ""
    table = Table(title=f"collectives in {path.name} ({summary.kind}, {len(summary.ranks)} rank(s){files})",
                  title_justify="left")
    for col in ("collective", "ranks", "calls", "bytes", "GiB", "time s", "dtypes"):
        table.add_column(col, justify="left" if col in ("collective", "dtypes") else "right")
    for s in summary.rows():
        table.add_row(
            s.op, str(s.nranks or "-"), f"{s.calls:,}", f"{s.bytes:,}", f"{s.bytes / 2**30:.3f}",
            f"{s.time_s:.4f}" if s.time_s is not None else "n/a", ", ".join(sorted(s.dtypes)),
        )
    console.print(table)
    if summary.skipped:
        console.print(f"{summary.skipped} profiler event(s) with non-numeric fields were left out.")
    if summary.kind == "nccl-log":
        console.print("NCCL INFO lines carry no durations: time needs a profiler trace.")
