"""Experiment directories: the one writer every launcher and the engine use.

Layout (ARCHITECTURE.md)::

    experiments/<workload>_<size>_<dtype>_gpus<N>/<UTC timestamp>/
        config.json        resolved config (everything needed to rerun)
        environment.json   versions, devices, host
        log.txt            the run's log (llmb step lines)
        metrics.jsonl      one record per step
        summary.json       window statistics and derived metrics
        tensorboard/       TensorBoard event files
        checkpoints/ profiles/

The root is ``./experiments`` unless ``LLMB_EXPERIMENTS_DIR`` says otherwise. No torch import
here: environment facts that need torch are passed in by the caller.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT_ENV = "LLMB_EXPERIMENTS_DIR"
CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"


def experiments_root() -> Path:
    return Path(os.environ.get(ROOT_ENV, "experiments"))


def experiment_name(workload: str, size: str, dtype: str, gpus: int) -> str:
    """``<workload>_<size>_<dtype>_gpus<N>`` (path separators in names become ``-``)."""
    clean = lambda s: str(s).replace(os.sep, "-").replace(" ", "-")  # noqa: E731
    return f"{clean(workload)}_{clean(size)}_{clean(dtype)}_gpus{gpus}"


def utc_stamp(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"


def create_experiment_dir(
    workload: str, size: str, dtype: str, gpus: int, root: Path | None = None
) -> Path:
    """Create and return a fresh experiment directory (a new timestamp each call)."""
    return fresh_stamp_dir((root or experiments_root()) / experiment_name(workload, size, dtype, gpus))


def fresh_stamp_dir(base: Path) -> Path:
    """Create ``base/<UTC timestamp>``, a new one even when another process took this one."""
    base.mkdir(parents=True, exist_ok=True)
    while True:
        path = base / utc_stamp()
        try:
            path.mkdir()
            return path
        except FileExistsError:  # two runs in the same millisecond
            continue


def host_facts() -> dict[str, Any]:
    """Facts about the host and Python (no torch)."""
    from llmb import __version__

    return {
        "llmb_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "utc_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (write aside, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_experiment_files(path: Path, config: dict[str, Any], environment: dict[str, Any]) -> None:
    """Write the resolved config and the environment facts (merged over :func:`host_facts`)."""
    write_json(path / CONFIG_FILE, config)
    write_json(path / ENVIRONMENT_FILE, {**host_facts(), **environment})
