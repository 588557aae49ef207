"""The two kinds of failure llmb distinguishes.

A :class:`LlmbError` is a user mistake (bad input, an invalid layout, an unknown workload):
the CLI prints its message as one line and exits with code 1. A :class:`SystemFailure` is the
environment failing us (a process died, a file system is full): exit code 2.
"""

from __future__ import annotations


class LlmbError(Exception):
    """A user mistake. The message is one readable line, without a trailing period."""

    exit_code = 1

    def __init__(self, message: str):
        # Keep the promise of one line even when a caller builds a message from user input.
        super().__init__(" ".join(str(message).split()))


class CatalogError(LlmbError):
    """A workload or hardware file is malformed, or a lookup names nothing in the catalog."""


class LayoutError(LlmbError):
    """A parallel layout violates a constraint a training framework would reject."""


class SystemFailure(Exception):
    """The environment failed (a subprocess, a device, the file system)."""

    exit_code = 2
