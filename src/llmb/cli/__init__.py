"""The ``llmb`` command line: thin typer commands over the library.

Each area registers its commands from its own module (``catalog_cmds``, ...) on the one
:data:`app`. Errors: a user mistake (:class:`~llmb.errors.LlmbError`, or a usage error such as
an unknown option) prints one line and exits 1; a system failure exits 2; nothing prints a
traceback unless ``LLMB_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys

import typer

try:  # typer >= 0.20 vendors its own click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exc

from llmb.cli.app import app, console, err_console
from llmb.errors import LlmbError, SystemFailure

# Command modules register themselves on `app` when imported.
from llmb.cli import (  # noqa: E402,F401
    catalog_cmds,
    data_cmds,
    engine_cmds,
    launch_cmds,
    model_cmds,
    predict_cmds,
    results_cmds,
    trace_cmds,
)

__all__ = ["app", "console", "err_console", "main"]


def _fail(message: str, code: int) -> int:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return code


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``llmb`` console script; returns the process exit code."""
    command = typer.main.get_command(app)
    debug = os.environ.get("LLMB_DEBUG") == "1"
    try:
        rc = command.main(args=argv, prog_name="llmb", standalone_mode=False)
    except LlmbError as exc:
        if debug:
            raise
        return _fail(str(exc), exc.exit_code)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return _fail("aborted", 130)
    except click_exc.NoArgsIsHelpError as exc:
        exc.show()  # no arguments: the help text, not an error
        return 0
    except click_exc.ClickException as exc:
        # Usage errors (unknown option, bad value, missing argument) are user mistakes: one
        # line, exit 1, like every other bad input.
        return _fail(" ".join(exc.format_message().split()), 1)
    except SystemFailure as exc:
        if debug:
            raise
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        return 0
    except Exception as exc:  # an llmb bug or an environment failure: one line, exit 2
        if debug:
            raise
        return _fail(f"{type(exc).__name__}: {_one_line(exc)} (set LLMB_DEBUG=1 for a traceback)", 2)
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # e.g. torch.distributed.checkpoint's CheckpointException
        if debug:
            raise
        return _fail(f"{type(exc).__name__}: {_one_line(exc)} (set LLMB_DEBUG=1 for a traceback)", 2)
    # With standalone_mode=False click returns typer.Exit's code instead of raising it.
    return rc if isinstance(rc, int) else 0


def run() -> None:  # pragma: no cover - console-script shim
    sys.exit(main())
