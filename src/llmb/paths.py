"""Where llmb keeps its own files.

``LLMB_HOME`` (default ``~/.llmb``) holds the job store, cached measurements and, unless
``LLMB_INSTALL`` says otherwise, the cluster configuration. Experiment folders go under
``./experiments`` unless ``LLMB_EXPERIMENTS_DIR`` says otherwise
(``<root>/<workload>_<size>_<dtype>_gpus<N>/<UTC timestamp>/``, written by
:mod:`llmb.launch.experiment`).
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


EXPERIMENTS_ENV = "LLMB_EXPERIMENTS_DIR"


def experiments_root() -> Path:
    """Where experiment folders go (``LLMB_EXPERIMENTS_DIR``, else ``./experiments``)."""
    return Path(os.environ.get(EXPERIMENTS_ENV) or "experiments")


def experiment_name(workload: str, size: str, dtype: str, gpus: int) -> str:
    """``<workload>_<size>_<dtype>_gpus<N>`` (path separators and blanks in names become ``-``)."""
    clean = lambda s: str(s).replace(os.sep, "-").replace(" ", "-")  # noqa: E731
    return f"{clean(workload)}_{clean(size)}_{clean(dtype)}_gpus{gpus}"
