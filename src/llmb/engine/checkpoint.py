"""Checkpoints with torch.distributed.checkpoint (DCP): a state dict in, a published
checkpoint folder out, and back.

The checkpointer knows nothing about training: the trainer hands it its state
(:meth:`llmb.engine.train.Trainer.state_dict`, tensors under layout-independent names, already
DTensors where they are sharded) and takes it back (:meth:`~llmb.engine.train.Trainer.
load_state_dict`). What the checkpointer does:

- **save**: every rank writes its shards into ``step_N.tmp-<id>`` (DCP, synchronous or
  ``dcp.async_save`` on a process group of its own); once DCP reports the save complete on
  every rank, rank 0 publishes it atomically and prunes (:mod:`llmb.checkpoint_files`, which
  also describes the layout on disk);
- **load**: check that the checkpoint holds every tensor of the state with the same global
  shape (a checkpoint of another model is one line, not a DCP traceback), then let DCP read
  the slices this layout needs, whatever layout saved them (DCP reshards DTensors).

Every rank calls the same methods in the same order: they run collectives.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
import warnings
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from llmb.checkpoint_files import checkpoint_dirname, dir_bytes, prune, publish
from llmb.engine import health
from llmb.errors import LlmbError, SystemFailure

#: Free space below which a failed save is reported as a full disk.
LOW_DISK_BYTES = 64 * 2**20
# One process saves without a process group on purpose; DCP warns about it on every call.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")


@dataclass(frozen=True)
class Saved:
    step: int
    duration_s: float
    bytes: int | None  # known on rank 0
    asynchronous: bool
    path: str


@dataclass(frozen=True)
class Loaded:
    path: Path
    start_wall_s: float  # epoch seconds, as the recipes' lines (comparable across ranks)
    duration_s: float
    dropped: tuple[str, ...]  # optional top-level keys the checkpoint did not have


class Checkpointer:
    """Saves state dicts into ``root`` (an experiment's ``checkpoints/``) and loads them back.

    ``marker`` is what the completion marker records about the run besides the step (layout,
    workload, size, dtype); ``log`` prints one line (the recipes' "Global Checkpoint Save"
    format)."""

    def __init__(self, root: Path | None, rank: int, marker: dict[str, Any], keep_last: int | None = None,
                 log: Callable[[str], None] = print):
        self.root, self.rank, self.marker, self.keep_last, self.log = root, rank, marker, keep_last, log
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self._pending: tuple[Future, Path, int, float, float] | None = None
        self._pg = None  # async saves run their collectives on a group of their own
        self.saves: list[Saved] = []
        self._no_dist = not dist.is_initialized()

    # -- saving ------------------------------------------------------------------------------
    def save(self, state: dict[str, Any], step: int, async_save: bool = False) -> None:
        """Save ``state`` (the state after ``step`` completed steps) as ``checkpoints/step_N``."""
        if self.root is None:
            return
        self.wait()  # one save in flight at a time
        start_wall = time.time()
        t0 = time.perf_counter()
        tmp = None
        try:
            tmp = self._tmp_dir(step)
            self._write(state, step, tmp, async_save, start_wall, t0)
        except (CheckpointException, OSError) as exc:
            self._abandon(tmp, step, exc)

    def _abandon(self, tmp: Path | None, step: int, exc: BaseException) -> None:
        """A save that failed (disk full, permissions, a rank's I/O error): remove its partial
        folder, keep every earlier checkpoint, and stop the run with the cause in words."""
        self._pending = None
        cause = _first_failure(exc)
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            free = None
        # torch's writers report a full disk in their own words ("unexpected pos ..."): say it.
        if "No space left" in cause or getattr(exc, "errno", None) == errno.ENOSPC:
            cause = f"disk full ({cause})"
        elif free is not None and free < LOW_DISK_BYTES:
            cause = f"disk full: {free / 2**20:.1f} MiB left on its file system ({cause})"
        if self.rank == 0 and tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise SystemFailure(f"checkpoint of step {step} could not be written into {self.root}: {cause}; "
                            "the partial checkpoint was removed, earlier ones are intact") from None

    def _write(self, state: dict[str, Any], step: int, tmp: Path, async_save: bool, start_wall: float,
               t0: float) -> None:
        if async_save:
            if dist.is_initialized() and self._pg is None:
                # Background uploads must not interleave their collectives with training's.
                self._pg = dist.new_group(backend="gloo")
            resp = dcp.async_save(state, checkpoint_id=str(tmp), process_group=self._pg, no_dist=self._no_dist)
            future = getattr(resp, "upload_completion", resp)
            blocked_s = time.perf_counter() - t0
            self._pending = (future, tmp, step, start_wall, t0)
            self.log(f"Global Checkpoint Save : Rank: {self.rank} : Iteration: {step} : Start time: "
                     f"{start_wall:.3f}s : Async save started, training blocked for: {blocked_s:.3f}s")
            return
        dcp.save(state, checkpoint_id=str(tmp), no_dist=self._no_dist)
        health.maybe_fail_save(step)
        self._publish(tmp, step, start_wall, t0, asynchronous=False)

    def _tmp_dir(self, step: int) -> Path:
        # One name on every rank: rank 0 picks it (unique even after a crash left others).
        name = [f"{checkpoint_dirname(step)}.tmp-{os.getpid()}-{int(time.time() * 1000)}"]
        if dist.is_initialized():
            dist.broadcast_object_list(name, src=0)
        path = self.root / name[0]
        if self.rank == 0:
            path.mkdir(parents=True, exist_ok=True)
        if dist.is_initialized():
            dist.barrier()
        return path

    def _publish(self, tmp: Path, step: int, start_wall: float, t0: float, asynchronous: bool) -> None:
        """Rank 0: marker, rename, prune. DCP returns on every rank only after its coordinator
        wrote ``.metadata``, so the files of all ranks are complete here."""
        final = self.root / checkpoint_dirname(step)
        health.maybe_kill_during_save(self.rank, step)
        size = None
        if self.rank == 0:
            marker = {**self.marker, "step": step, "world_size": self.world, "bytes": dir_bytes(tmp),
                      "saved_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            publish(tmp, final, marker)
            prune(self.root, current=step, keep_last=self.keep_last)
            size = dir_bytes(final)
        duration = time.perf_counter() - t0
        self.saves.append(Saved(step, duration, size, asynchronous, str(final)))
        kind = "Async save duration" if asynchronous else "Save duration"
        self.log(f"Global Checkpoint Save : Rank: {self.rank} : Iteration: {step} : Start time: "
                 f"{start_wall:.3f}s : {kind}: {duration:.3f}s"
                 + (f" : Size: {size / 2**20:.2f} MiB : {final}" if size is not None else ""))

    @property
    def pending_step(self) -> int | None:
        """The step of the async save still in flight, if any."""
        return self._pending[2] if self._pending else None

    def poll(self) -> None:
        """Publish a finished async save (non-blocking; call once per step on every rank)."""
        if self._pending is None:
            return
        done = torch.tensor(int(self._pending[0].done()))
        if dist.is_initialized():
            # Publish only when every rank's upload finished (rank 0 renames the folder).
            dist.all_reduce(done, op=dist.ReduceOp.MIN)
        if int(done):
            self.wait()

    def wait(self) -> None:
        """Block until the async save in flight (if any) is written, then publish it."""
        if self._pending is None:
            return
        future, tmp, step, start_wall, t0 = self._pending
        self._pending = None
        try:
            future.result()
            health.maybe_fail_save(step)
            if dist.is_initialized():
                dist.barrier()
            self._publish(tmp, step, start_wall, t0, asynchronous=True)
        except (CheckpointException, OSError) as exc:
            self._abandon(tmp, step, exc)

    # -- loading -----------------------------------------------------------------------------
    def load(self, path: Path, state: dict[str, Any], optional: tuple[str, ...] = ()) -> Loaded:
        """Load the checkpoint at ``path`` into ``state`` (tensors in place, other values
        replaced). Top-level keys in ``optional`` that the checkpoint lacks are dropped from
        ``state`` (e.g. the RNG of a rank that did not exist when it was saved)."""
        start_wall = time.time()
        t0 = time.perf_counter()
        try:
            saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
        except Exception as exc:  # a truncated, empty or foreign .metadata
            raise LlmbError(f"checkpoint {path} is damaged: its index (.metadata) cannot be read "
                            f"({_first_failure(exc)})") from None
        dropped = tuple(k for k in optional if k in state
                        and not any(key == k or key.startswith(k + ".") for key in saved))
        for key in dropped:
            del state[key]
        tensors = [(f"{top}.{k}", v) for top, group in state.items() if isinstance(group, dict)
                   for k, v in group.items() if isinstance(v, torch.Tensor)]
        missing = [k for k, _ in tensors if k not in saved]
        if missing:
            raise LlmbError(
                f"checkpoint {path} does not fit this model: {len(missing)} tensor(s) missing, e.g. "
                f"{missing[0].split('.', 1)[1]} (different workload, proxy or model size?)"
            )
        for key, value in tensors:
            # DTensor.shape is the global shape: what the checkpoint recorded, whatever the layout.
            size = tuple(getattr(saved[key], "size", ()))
            if size != tuple(value.shape):
                raise LlmbError(
                    f"checkpoint {path} does not fit this model: {key.split('.', 1)[1]} has shape {list(size)} "
                    f"there and {list(value.shape)} here (different workload, proxy or model size?)"
                )
        try:
            dcp.load(state, checkpoint_id=str(path), no_dist=self._no_dist)
        except (CheckpointException, Exception) as exc:  # CheckpointException is a BaseException
            raise LlmbError(f"checkpoint {path} is damaged: its shards cannot be read ({_first_failure(exc)}; "
                            "truncated or overwritten files?)") from None
        return Loaded(path=path, start_wall_s=start_wall, duration_s=time.perf_counter() - t0, dropped=dropped)


def _first_failure(exc: BaseException) -> str:
    """The underlying error of a DCP failure, in words (DCP wraps each rank's in one exception)."""
    failures = getattr(exc, "failures", None)
    if failures:
        first = next(iter(failures.values()))
        if isinstance(first, tuple):  # DCP's wrapped (exception, stack summary)
            first = first[0]
        exc = first if isinstance(first, BaseException) else exc
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_description(path: Path) -> dict[str, Any]:
    """What the checkpoint at ``path`` holds (:func:`llmb.engine.train.describe`), read from
    the checkpoint itself; for a checkpoint written before llmb recorded it there, from its
    experiment's ``config.json`` (``EXPERIMENT/checkpoints/step_N``). One process."""
    import json

    from llmb.engine.train import DESCRIPTION_KEY

    path = Path(path)
    try:
        saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    except Exception as exc:  # DCP's reader raises several types for a folder that is not one
        raise LlmbError(f"{path}: not a DCP checkpoint ({type(exc).__name__}: {exc})") from None
    if DESCRIPTION_KEY in saved:
        state: dict[str, Any] = {DESCRIPTION_KEY: ""}
        dcp.load(state, checkpoint_id=str(path), no_dist=True)
        return json.loads(state[DESCRIPTION_KEY])
    from llmb.records import CONFIG_FILE, RunConfig

    config = path.parent.parent / CONFIG_FILE
    if not config.is_file():
        raise LlmbError(f"{path}: the checkpoint does not say which model it holds, and no {CONFIG_FILE} is beside it")
    cfg = RunConfig.read(config)
    return {"llmb_version": None, "model": cfg.model.model_dump(mode="json"), "layout": cfg.layout.model_dump(),
            "workload": cfg.workload, "size": cfg.size, "proxy": cfg.proxy, "size_label": cfg.size_label,
            "dtype": cfg.dtype, "world_size": cfg.world_size}


def model_tensor_names(path: Path) -> list[str]:
    """The model parameters (llmb fqns) a DCP checkpoint of a trainer holds."""
    saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    prefix = "tensors.model."
    return [k.removeprefix(prefix) for k in saved if k.startswith(prefix)]


def read_model_tensors(path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """Whole copies (in their saved dtype) of the model parameters ``names`` from a DCP checkpoint (one process,
    whatever layout saved it: DCP assembles the shards)."""
    saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    tensors = {}
    for n in names:
        meta = saved[f"tensors.model.{n}"]
        tensors[f"model.{n}"] = torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
    dcp.load({"tensors": tensors}, checkpoint_id=str(path), no_dist=True)
    return {k.removeprefix("model."): v for k, v in tensors.items()}

