"""Checkpoint folders on disk: names, completeness, finding, atomic publishing and pruning.

No torch here: planning checks that ``--load``/``--resume`` name a complete checkpoint before
any process starts, and the engine's checkpointer (:mod:`llmb.engine.checkpoint`, which maps
the trainer's state to torch.distributed.checkpoint) publishes and prunes through these
functions.

Layout on disk (inside an experiment folder)::

    checkpoints/
        step_00000050/              a complete checkpoint: the state after 50 steps
            __0_0.distcp ...        DCP shards, one file per rank that wrote data
            .metadata               DCP's index (written last by DCP's coordinator)
            llmb_checkpoint.json    llmb's completion marker (written after .metadata)
        step_00000060.tmp-<id>/     a save in progress (or one that crashed): never loaded

Atomic publish: every rank writes into ``step_N.tmp-<id>``; once DCP reports the save complete
on all ranks, rank 0 writes the marker and renames the folder to ``step_N``
(:func:`publish`). A crash at any point leaves either a ``.tmp-`` folder (ignored, cleaned up
by the next save) or a complete checkpoint; an earlier checkpoint is never touched, except by
``--keep-last`` (:func:`prune`), which deletes old ones only after a newer one is published.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from llmb.errors import LlmbError

CHECKPOINTS_DIR = "checkpoints"
MARKER = "llmb_checkpoint.json"
FORMAT_VERSION = 1
_COMPLETE = re.compile(r"^step_(\d+)$")
_LEFTOVER = re.compile(r"^step_(\d+)\.(tmp|old)-")


def checkpoint_dirname(step: int) -> str:
    return f"step_{step:08d}"


def is_complete(path: Path) -> bool:
    """A published checkpoint: its name, DCP's index and llmb's marker are all there."""
    return _COMPLETE.match(path.name) is not None and (path / ".metadata").is_file() and (path / MARKER).is_file()


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """The complete checkpoints in ``root`` (a ``checkpoints/`` folder), oldest step first."""
    if not root.is_dir():
        return []
    found = [(int(_COMPLETE.match(p.name).group(1)), p) for p in root.iterdir() if is_complete(p)]
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1][1] if found else None


def resolve_load_path(path: str | Path) -> Path:
    """A checkpoint to load from ``path``: a checkpoint folder, a ``checkpoints/`` folder or an
    experiment folder (then its latest complete checkpoint)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise LlmbError(f"checkpoint path {p} does not exist")
    if _COMPLETE.match(p.name) or ".tmp-" in p.name:
        if not is_complete(p):
            raise LlmbError(f"{p} is not a complete checkpoint (no {MARKER} or .metadata: the save did not finish)")
        return p
    for root in (p, p / CHECKPOINTS_DIR):
        latest = latest_checkpoint(root)
        if latest is not None:
            return latest
    raise LlmbError(f"no complete checkpoint in {p}")


def latest_of_experiment(experiment: Path) -> Path | None:
    """For ``--resume``: the most recently published checkpoint of any run of one experiment
    (``experiments/<name>/*/checkpoints``; ``experiment`` is the ``<name>`` folder), or None."""
    best: tuple[float, Path] | None = None
    if not experiment.is_dir():
        return None
    for run_dir in experiment.iterdir():
        if not run_dir.is_dir():
            continue
        for _, ckpt in complete_checkpoints(run_dir / CHECKPOINTS_DIR):
            published = (ckpt / MARKER).stat().st_mtime
            if best is None or published > best[0]:
                best = (published, ckpt)
    return best[1] if best else None


def dir_bytes(path: Path) -> int:
    """Bytes of the files in ``path`` (a checkpoint's size on disk, before file-system blocks)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def publish(tmp: Path, final: Path, marker: dict[str, Any]) -> None:
    """Mark the finished save in ``tmp`` complete and rename it to ``final`` (durably: the
    marker is synced before the rename, the folder after it). A checkpoint already at ``final``
    (the same step saved again, e.g. after a restart) is replaced."""
    _write_synced(tmp / MARKER, json.dumps({"format": FORMAT_VERSION, **marker}, indent=2) + "\n")
    if final.exists():
        old = final.with_name(final.name + f".old-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    _fsync_dir(final.parent)


def prune(root: Path, current: int, keep_last: int | None) -> None:
    """Drop abandoned ``.tmp-``/``.old-`` folders of steps before ``current``, and the complete
    checkpoints beyond the newest ``keep_last``."""
    for p in root.iterdir():
        m = _LEFTOVER.match(p.name)
        if m and int(m.group(1)) < current and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
    if keep_last:
        for _, p in complete_checkpoints(root)[:-keep_last]:
            # Unpublish first (a reader never sees a half-deleted checkpoint as complete).
            (p / MARKER).unlink(missing_ok=True)
            shutil.rmtree(p, ignore_errors=True)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    # Make the rename itself durable (POSIX: a directory entry change needs the directory synced).
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
