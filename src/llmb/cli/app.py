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
DEFAULT_WIDTH = 140  # columns when stdout is not a terminal: logs and pasted output read better wide
MIN_WIDTH = 40


def output_width(environ=os.environ, is_terminal: bool | None = None) -> int | None:
    """The width for rich's console: the terminal's own (None) on a terminal; else COLUMNS when
    it is a whole number of at least MIN_WIDTH, otherwise the default (an empty, non-numeric,
    zero or negative COLUMNS must not stop every command, nor make it print nothing)."""
    if sys.stdout.isatty() if is_terminal is None else is_terminal:
        return None
    raw = (environ.get("COLUMNS") or "").strip()
    return max(MIN_WIDTH, int(raw)) if raw.isdigit() and int(raw) > 0 else DEFAULT_WIDTH


# Rich wraps at 80 columns when stdout is not a terminal; logs and pasted output read better wider.
console = Console(width=output_width())
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")


def print_json(data: Any) -> None:
    """Write JSON to stdout without rich's wrapping or highlighting."""
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


@app.callback()
def _root() -> None:
    """LLM pretraining benchmarks: catalog, planning, training engine, launchers, results."""
