"""Experiment directories: the one writer every launcher uses.

Layout (the README's "Experiment folders")::

    experiments/<workload>_<size>_<dtype>_gpus<N>/<UTC timestamp>/
        config.json        the resolved run (llmb.records.RunConfig): what the workers execute
        environment.json   versions, devices, host (written by the engine's rank 0)
        log.txt            the run's log (llmb step lines)
        metrics.jsonl      one record per step
        summary.json       window statistics and derived metrics (llmb.records.RunSummary)
        tensorboard/       TensorBoard event files
        checkpoints/ profiles/

The root is ``./experiments`` unless ``LLMB_EXPERIMENTS_DIR`` says otherwise
(:func:`llmb.paths.experiments_root`). Creating the folder is the last step of launching: a
run is resolved and checked first (:mod:`llmb.plan.run`), so a mistake leaves no folder.
"""

from __future__ import annotations

import errno
from datetime import datetime, timezone
from pathlib import Path

from llmb.errors import LlmbError, SystemFailure
from llmb.paths import experiment_name, experiments_root
from llmb.records import CONFIG_FILE, RunConfig


def utc_stamp(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"


def experiment_base(config: RunConfig, root: Path | None = None) -> Path:
    """``<root>/<workload>_<size>_<dtype>_gpus<N>``: the folder of every run of this experiment."""
    return (root or experiments_root()) / experiment_name(config.workload, config.size_label, config.dtype,
                                                          config.world_size)


def fresh_stamp_dir(base: Path) -> Path:
    """Create ``base/<UTC timestamp>``, a new one even when another process took this one."""
    try:
        base.mkdir(parents=True, exist_ok=True)
        while True:
            path = base / utc_stamp()
            try:
                path.mkdir()
                return path
            except FileExistsError:  # two runs in the same millisecond
                continue
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
            raise LlmbError(f"cannot create the experiment folder under {base}: {exc.strerror} "
                            "(set LLMB_EXPERIMENTS_DIR to a writable folder)") from None
        raise SystemFailure(f"cannot create the experiment folder under {base}: {exc.strerror or exc}") from None


def create_experiment(config: RunConfig, root: Path | None = None) -> Path:
    """A fresh experiment folder for ``config`` (a new timestamp each call), holding
    ``config.json``."""
    path = fresh_stamp_dir(experiment_base(config, root))
    config.write(path / CONFIG_FILE)
    return path
