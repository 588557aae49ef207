"""Where llmb keeps its own files.

``LLMB_HOME`` (default ``~/.llmb``) holds the job store, cached measurements and, unless
``LLMB_INSTALL`` says otherwise, the cluster configuration.
"""

from __future__ import annotations

import os
from pathlib import Path


def llmb_home() -> Path:
    """The per-user llmb folder (created on demand by whoever writes into it)."""
    return Path(os.environ.get("LLMB_HOME") or Path.home() / ".llmb").expanduser()


def install_dir() -> Path:
    """The install folder of the reference recipes' layout (``LLMB_INSTALL``), else llmb_home()."""
    value = os.environ.get("LLMB_INSTALL")
    return Path(value).expanduser() if value else llmb_home()
