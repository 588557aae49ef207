"""Checkpoints with torch.distributed.checkpoint (DCP): save, load, reshard, resume.

Layout on disk (inside the experiment directory)::

    checkpoints/
        step_00000050/              a complete checkpoint: the state after 50 steps
            __0_0.distcp ...        DCP shards, one file per rank that wrote data
            .metadata               DCP's index (written last by DCP's coordinator)
            llmb_checkpoint.json    llmb's completion marker (written after .metadata)
        step_00000060.tmp-<id>/     a save in progress (or one that crashed): never loaded

Atomic publish: every rank writes into ``step_N.tmp-<id>``; when DCP reports the save complete
on all ranks, rank 0 writes the marker and renames the folder to ``step_N``. A crash at any
point leaves either a ``.tmp-`` folder (ignored, cleaned up by the next save) or a complete
checkpoint; an earlier checkpoint is never touched, except by ``--keep-last``, which deletes
old ones only after a newer one is published.

What is saved, under layout-independent names, so a checkpoint loads into any world size or
layout (DCP reshards DTensors: FSDP2 shards, TP slices):

- ``model.<fqn>``: fp32 weights (the fp32 master copies when the model holds bf16 weights);
  ``<fqn>`` is the parameter's name in one unparallelized model (pipeline chunks keep global
  layer numbers; ``torch.compile``'s ``_orig_mod.`` is removed).
- ``optim.<fqn>.{step,exp_avg,exp_avg_sq}``: AdamW state of that parameter.
- ``train``: completed steps, LR scheduler state, data position, the layout that saved it.
- ``rng.rank<r>``: each rank's torch RNG state (restored where the rank exists again).

Expert parallelism keeps expert weights as plain per-rank slices ``[experts/EP, ...]`` (the
FFN width split by ETP); they are handed to DCP as DTensors sharded over the (EP, ETP) mesh
(replicas in other expert-data-parallel groups are written once), so they reshard too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from llmb.engine import health
from llmb.engine.parallel.expert import EXPERT_ATTR
from llmb.errors import LlmbError

CHECKPOINTS_DIR = "checkpoints"
MARKER = "llmb_checkpoint.json"
FORMAT_VERSION = 1
_COMPLETE = re.compile(r"^step_(\d+)$")
_ADAMW_STATE = ("step", "exp_avg", "exp_avg_sq")
# One process saves without a process group on purpose; DCP warns about it on every call.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")


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


def latest_of_experiment(exp_dir: Path) -> Path | None:
    """For ``--resume``: the most recently published checkpoint of any earlier run of the same
    experiment (``experiments/<name>/*/checkpoints``), or None."""
    best: tuple[float, Path] | None = None
    for run_dir in exp_dir.parent.iterdir():
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


def _fqn(name: str) -> str:
    return name.replace("_orig_mod.", "")


@dataclass
class LoadResult:
    step: int  # completed steps in the checkpoint: training continues with step + 1
    path: Path
    duration_s: float
    saved_world_size: int | None
    rng_restored: bool


class Checkpointer:
    """Saves and loads one rank's share of a :class:`~llmb.engine.train.Trainer`'s state.

    Every rank calls the same methods in the same order (they run collectives)."""

    def __init__(self, trainer, run, exp_dir: Path | None, rank: int, log=print):
        self.trainer, self.run, self.rank, self.log = trainer, run, rank, log
        self.root = exp_dir / CHECKPOINTS_DIR if exp_dir is not None else None
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self._pending: tuple[Future, Path, int, float, float] | None = None
        self._pg = None  # async saves run their collectives on a group of their own
        self.saves: list[dict[str, Any]] = []  # what was saved, for the summary
        self._no_dist = not dist.is_initialized()
        self._expert_mesh = None
        if trainer.par.expert_mesh is not None:
            # Expert weights are plain local slices [experts/EP, ..., width/ETP, ...]: presented
            # to DCP as DTensors sharded over the (EP, ETP) mesh, so they reshard like every
            # other weight.
            self._expert_mesh = trainer.par.expert_mesh["ep", "etp"]
        opt = trainer.optimizer
        if not isinstance(opt, torch.optim.AdamW) or any(g.get("amsgrad") for g in opt.param_groups):
            raise LlmbError("checkpoints support the engine's AdamW optimizer (no amsgrad) only")

    # -- the state, under layout-independent names -------------------------------------------
    def _named(self) -> list[tuple[str, torch.nn.Parameter, torch.Tensor]]:
        """(fqn, model parameter, the tensor AdamW updates) for this rank's parameters."""
        t = self.trainer
        named = [(_fqn(n), p) for m in t.parts.modules for n, p in m.named_parameters()]
        masters = t.master.masters if t.master else [p for _, p in named]
        if len(masters) != len(named):
            raise RuntimeError("master weights do not match the model's parameters")
        return [(n, p, q) for (n, p), q in zip(named, masters)]

    def _ensure_optimizer_state(self) -> None:
        """AdamW creates its state at the first step; a load before it needs targets to fill."""
        opt = self.trainer.optimizer
        for group in opt.param_groups:
            for q in group["params"]:
                if q not in opt.state or not opt.state[q]:
                    opt.state[q] = {
                        "step": torch.tensor(0.0),
                        "exp_avg": torch.zeros_like(q, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(q, memory_format=torch.preserve_format),
                    }

    def _tensors(self) -> dict[str, Any]:
        opt = self.trainer.optimizer
        out: dict[str, Any] = {}
        for fqn, p, q in self._named():
            expert = self._expert_mesh is not None and getattr(p, EXPERT_ATTR, False)
            wrap = (lambda t, fqn=fqn: self._as_expert_dtensor(t, fqn)) if expert else (lambda t: t)
            out[f"model.{fqn}"] = wrap(q.detach())
            for key in _ADAMW_STATE:
                value = opt.state[q][key]
                out[f"optim.{fqn}.{key}"] = wrap(value) if key != "step" else value
        for m in self.trainer.parts.modules:  # persistent buffers, if a model has any
            params = {n for n, _ in m.named_parameters()}
            for n, b in m.named_buffers():
                if n not in params and _is_persistent(m, n):
                    out[f"buffer.{_fqn(n)}"] = b
        return out

    def _as_expert_dtensor(self, local: torch.Tensor, fqn: str):
        from torch.distributed.tensor import DTensor, Shard

        # Experts on dim 0; the FFN width is dim 2 of w1/w3 [E, dim, hidden], dim 1 of w2.
        width = 1 if fqn.endswith(".w2") else 2
        # from_local keeps `local` as the storage: a load writes straight into the parameter.
        return DTensor.from_local(local, self._expert_mesh, [Shard(0), Shard(width)], run_check=False)

    def _train_state(self, step: int) -> dict[str, Any]:
        t = self.trainer
        data = t.data
        if hasattr(data, "state_dict"):
            data_state = {"kind": type(data).__name__, **data.state_dict()}
        else:  # synthetic tokens: a pure function of (seed, step, sample)
            data_state = {"kind": type(data).__name__, "next_step": step}
        return {
            "step": step,
            "scheduler": t.scheduler.state_dict(),
            "lr": [g["lr"] for g in t.optimizer.param_groups],
            "data": data_state,
            "world_size": self.world,
            "layout": {**self.run.layout.as_dict(), "dp": self.run.derived.dp},
            "dtype": self.run.recipe.dtype,
        }

    def _rng(self) -> dict[str, torch.Tensor]:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    # -- saving ------------------------------------------------------------------------------
    def save(self, step: int, async_save: bool = False) -> None:
        """Save the state after ``step`` completed steps into ``checkpoints/step_N``."""
        if self.root is None:
            return
        self.wait()  # one save in flight at a time
        self._ensure_optimizer_state()
        start_wall = time.time()  # epoch seconds, as the recipes' lines (comparable across ranks)
        t0 = time.perf_counter()
        tmp = self._tmp_dir(step)
        state = {
            "tensors": self._tensors(),
            "train": self._train_state(step),
            f"rng.rank{self.rank}": self._rng(),
        }
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
        if self.rank == 0:
            size = dir_bytes(tmp)
            marker = {
                "format": FORMAT_VERSION, "step": step, "world_size": self.world,
                "layout": {**self.run.layout.as_dict(), "dp": self.run.derived.dp},
                "workload": self.run.recipe.workload.name, "size": self.run.size_label,
                "dtype": self.run.recipe.dtype, "bytes": size,
                "saved_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            _write_synced(tmp / MARKER, json.dumps(marker, indent=2) + "\n")
            if final.exists():  # the same step saved again (e.g. after a restart): replace it
                old = final.with_name(final.name + f".old-{os.getpid()}")
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(final)
            _fsync_dir(self.root)
            self._prune(current=step)
        duration = time.perf_counter() - t0
        size = dir_bytes(final) if self.rank == 0 else None
        self.saves.append({"step": step, "duration_s": duration, "bytes": size, "async": asynchronous,
                           "path": str(final)})
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
        future.result()
        if dist.is_initialized():
            dist.barrier()
        self._publish(tmp, step, start_wall, t0, asynchronous=True)

    def _prune(self, current: int) -> None:
        """Rank 0: drop abandoned ``.tmp-`` folders of earlier steps and checkpoints beyond
        ``--keep-last``."""
        keep = self.run.options.keep_last
        for p in self.root.iterdir():
            m = re.match(r"^step_(\d+)\.(tmp|old)-", p.name)
            if m and int(m.group(1)) < current and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
        if keep:
            for _, p in complete_checkpoints(self.root)[:-keep]:
                # Unpublish first (a reader never sees a half-deleted checkpoint as complete).
                (p / MARKER).unlink(missing_ok=True)
                shutil.rmtree(p, ignore_errors=True)

    # -- loading -----------------------------------------------------------------------------
    def load(self, path: Path) -> LoadResult:
        """Load the checkpoint at ``path`` into this rank's model, optimizer, scheduler, data
        and RNG; DCP reads the slices this layout needs from whatever layout saved it."""
        start_wall = time.time()  # epoch seconds, as the recipes' lines (comparable across ranks)
        t0 = time.perf_counter()
        self._ensure_optimizer_state()
        reader = dcp.FileSystemReader(str(path))
        saved = reader.read_metadata().state_dict_metadata
        saved_keys = set(saved)
        tensors = self._tensors()
        missing = sorted(k for k in tensors if f"tensors.{k}" not in saved_keys)
        if missing:
            raise LlmbError(
                f"checkpoint {path} does not fit this model: {len(missing)} tensor(s) missing, e.g. {missing[0]} "
                "(different workload, proxy or model size?)"
            )
        for key, value in tensors.items():
            # DTensor.shape is the global shape: what the checkpoint recorded, whatever the layout.
            size = tuple(getattr(saved[f"tensors.{key}"], "size", ()))
            if size != tuple(value.shape):
                raise LlmbError(
                    f"checkpoint {path} does not fit this model: {key} has shape {list(size)} there and "
                    f"{list(value.shape)} here (different workload, proxy or model size?)"
                )
        rng_key = f"rng.rank{self.rank}"
        state: dict[str, Any] = {"tensors": tensors, "train": self._train_state(0)}
        has_rng = any(k.startswith(rng_key + ".") for k in saved_keys)
        if has_rng:
            state[rng_key] = self._rng()
        dcp.load(state, checkpoint_id=str(path), no_dist=self._no_dist)
        t = self.trainer
        if t.master:
            t.master.masters_to_params()
        train = state["train"]
        t.scheduler.load_state_dict(train["scheduler"])
        for group, lr in zip(t.optimizer.param_groups, train["lr"]):
            group["lr"] = lr
        self._restore_data(train["data"])
        if has_rng:
            torch.set_rng_state(state[rng_key]["cpu"])
            if "cuda" in state[rng_key] and torch.cuda.is_available():
                torch.cuda.set_rng_state(state[rng_key]["cuda"])
        duration = time.perf_counter() - t0
        self.log(f"Global Checkpoint Load : Rank : {self.rank} : Start time : {start_wall:.3f}s : "
                 f"Time spent in load_checkpoint: {duration:.3f}s : Iteration: {train['step']} : "
                 f"saved on {train['world_size']} rank(s), loaded on {self.world} : {path}")
        return LoadResult(step=int(train["step"]), path=path, duration_s=duration,
                          saved_world_size=train.get("world_size"), rng_restored=has_rng)

    def _restore_data(self, saved: dict[str, Any]) -> None:
        t = self.trainer
        data = t.data
        if saved.get("kind") != type(data).__name__:
            raise LlmbError(f"the checkpoint's data came from {saved.get('kind')}, this run reads {type(data).__name__}")
        if hasattr(data, "load_state_dict"):
            data.load_state_dict({k: v for k, v in saved.items() if k != "kind"})
        else:
            data.step = int(saved["next_step"])
        t._batches = iter(data)  # drop anything the old iterator had prepared


def _is_persistent(module: torch.nn.Module, name: str) -> bool:
    *path, leaf = name.split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part)
    return leaf not in owner._non_persistent_buffers_set


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
