"""The shared typer application and consoles (kept apart so command modules can import them)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer
from rich.console import Console

app = typer.Typer(
    name="llmb",
    help="LLM pretraining benchmarks: catalog, planning, training engine, launchers, results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Rich wraps at 80 columns when stdout is not a terminal; logs and pasted output read better wider.
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "140"))
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")


def print_json(data: Any) -> None:
    """Write JSON to stdout without rich's wrapping or highlighting."""
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


@app.callback()
def _root() -> None:
    """LLM pretraining benchmarks: catalog, planning, training engine, launchers, results."""
