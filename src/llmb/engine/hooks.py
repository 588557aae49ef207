"""What the step loop calls around each step for checkpoints, profiling and health.

The runner stays a plain loop: :meth:`RunHooks.start` loads the checkpoint the run starts
from (if any) and returns the first step to run; :meth:`~RunHooks.before_step` /
:meth:`~RunHooks.after_step` go around every step and :meth:`~RunHooks.finish` at the end;
:meth:`~RunHooks.summary_fields` adds to the summary. Constructing the hooks does nothing else.
Every rank makes the same calls (checkpoints are collective).

Which checkpoint a run starts from, first match wins:

1. an elastic restart (``TORCHELASTIC_RESTART_COUNT`` > 0): the latest complete checkpoint of
   this experiment (the run's own earlier attempt);
2. the one the run was resolved with (``--load PATH`` / LOAD_CHECKPOINT_PATH, or ``--resume``:
   :attr:`llmb.plan.options.RunOptions.start_checkpoint`).

A fresh run (neither) may take its starting weights from ``--init-from`` (``hf:DIR`` or a llmb
checkpoint; :attr:`~llmb.plan.options.RunOptions.init_source`): they replace the seeded
initialization through the trainer's state (:meth:`~llmb.engine.train.Trainer.state_dict`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from llmb.checkpoint_files import CHECKPOINTS_DIR, latest_checkpoint
from llmb.engine import health
from llmb.engine.checkpoint import Checkpointer
from llmb.engine.models.init import local_box
from llmb.engine.profiling import StepProfiler, nccl_trace_note
from llmb.engine.train import DESCRIPTION_KEY
from llmb.errors import LlmbError
from llmb.records import CheckpointSave, Resumed


@dataclass(frozen=True)
class InitializedFrom:
    source: str
    elements_read: int  # by this rank
    load_time_s: float


class RunHooks:
    def __init__(self, run, trainer, exp_dir: Path | None, rank: int, device: torch.device,
                 log: Callable[[str], None] = print):
        self.run, self.trainer, self.rank, self.exp_dir, self.device = run, trainer, rank, exp_dir, device
        self.opts = run.options
        self.log = log
        self.invalid_reason: str | None = None
        self.resumed: Resumed | None = None
        self.initialized_from: InitializedFrom | None = None
        self.notes: list[str] = []
        self.ckpt: Checkpointer | None = None
        self.profiler: StepProfiler | None = None
        self._save_due: int | None = None  # saved before the next step, after its step line
        self._nan_step = health.injected_nan_step()

    def start(self) -> int:
        """Load the start checkpoint, set up checkpoints and the profiler; the first step."""
        opts, run, exp_dir = self.opts, self.run, self.exp_dir
        path = self._start_checkpoint()
        if opts.checkpointing or path is not None:
            marker = {"layout": {**run.layout.as_dict(), "dp": run.derived.dp}, "workload": run.recipe.workload.name,
                      "size": run.size_label, "dtype": run.recipe.dtype, "model": run.model.model_dump(mode="json")}
            root = exp_dir / CHECKPOINTS_DIR if exp_dir is not None else None
            self.ckpt = Checkpointer(root, self.rank, marker, opts.keep_last, log=self.log)
        first = 1
        if path is not None:
            first = self._load(path) + 1
        elif opts.init_source:
            self._init_weights(opts.init_source)
        if opts.profile and exp_dir is not None:
            self.profiler = StepProfiler(
                opts.profile_start_step, opts.profile_stop_step, self.rank, opts.profile_ranks, exp_dir, self.device,
                memory_snapshot=opts.memory_snapshot, log=self.log,
            )
            if opts.memory_snapshot and self.device.type != "cuda":
                self.notes.append("--memory-snapshot needs CUDA: not recorded on CPU")
        if opts.nccl_trace:
            self.notes.append(nccl_trace_note(self.device.type))
        if self.rank == 0:
            for note in self.notes:
                self.log(f"note: {note}")
        return first

    def _start_checkpoint(self) -> Path | None:
        if health.restart_count() > 0 and self.exp_dir is not None:
            own = latest_checkpoint(self.exp_dir / CHECKPOINTS_DIR)
            if own is not None:
                return own
        return Path(self.opts.start_checkpoint) if self.opts.start_checkpoint else None

    def _load(self, path: Path) -> int:
        """Load ``path`` into the trainer; returns the completed steps it holds."""
        t = self.trainer
        state = t.state_dict()
        loaded = self.ckpt.load(path, state, optional=(t.rng_key, DESCRIPTION_KEY))
        t.load_state_dict(state)
        step, train = t.completed_steps, state["train"]
        if step >= self.run.steps and health.restart_count() == 0:
            raise LlmbError(
                f"the checkpoint holds {step} completed steps and the run has {self.run.steps}: "
                "nothing left to train (raise --steps)"
            )
        world = self.ckpt.world
        self.log(f"Global Checkpoint Load : Rank : {self.rank} : Start time : {loaded.start_wall_s:.3f}s : "
                 f"Time spent in load_checkpoint: {loaded.duration_s:.3f}s : Iteration: {step} : "
                 f"saved on {train['world_size']} rank(s), loaded on {world} : {path}")
        self.resumed = Resumed(
            path=str(path), step=step, load_time_s=loaded.duration_s, saved_world_size=train.get("world_size"),
            rng_restored=t.rng_key not in loaded.dropped, restart_count=health.restart_count(),
        )
        return step

    def _init_weights(self, text: str) -> None:
        """Replace the freshly initialized weights by those of ``text`` (``hf:DIR`` or a llmb
        checkpoint): every rank reads only the slices its shards hold. Optimizer, schedule and
        data start anew."""
        from llmb.engine.checkpoint import read_description
        from llmb.engine.hf import load_hf_weights
        from llmb.engine.train import check_fits
        from llmb.plan.pretrained import parse_init_source

        t, src = self.trainer, parse_init_source(text)
        t0 = time.perf_counter()
        state = t.state_dict()
        model = {k: v for k, v in state["tensors"].items() if k.startswith("model.")}
        if src.kind == "hf":
            read = load_hf_weights(model, self.run.model, src.path)
        else:
            check_fits(read_description(src.path), self.run.model)
            Checkpointer(None, self.rank, {}, log=self.log).load(src.path, {"tensors": model})
            read = sum(local_box(v)[0].numel() for v in model.values())
        t.load_state_dict(state)
        self.initialized_from = InitializedFrom(source=src.text, elements_read=read,
                                                load_time_s=time.perf_counter() - t0)
        self.log(f"Initialized from {src.text} : Rank : {self.rank} : {read:,} weights read in "
                 f"{self.initialized_from.load_time_s:.3f}s")

    # -- around each step ------------------------------------------------------------------
    def should_stop(self) -> bool:
        return self.invalid_reason is not None

    def before_step(self, step: int) -> None:
        self._save_if_due()
        health.maybe_kill_self(self.rank, step)
        if self.ckpt is not None:
            self.ckpt.poll()
        if self.profiler is not None:
            self.profiler.before_step(step)

    def after_step(self, step: int, result):
        """Health check, profiler window, periodic checkpoint; returns the step's result (with
        the test hook's NaN when asked for)."""
        if self._nan_step == step:
            result = replace(result, loss=float("nan"))
        self.invalid_reason = health.nonfinite_reason(step, result.loss, result.grad_norm)
        if self.profiler is not None:
            self.profiler.after_step(step)
        every = self.opts.save_every
        if self.invalid_reason is None and every and step % every == 0 and self.ckpt is not None:
            self._save_due = step
        return result

    def _save_if_due(self) -> None:
        if self._save_due is not None:
            self._save_due = None
            self.ckpt.save(self.trainer.state_dict(), self.trainer.completed_steps, async_save=self.opts.async_save)

    def status(self, status: str) -> str:
        return "invalid" if self.invalid_reason is not None and status != "failed" else status

    def finish(self, status: str) -> None:
        """Close the profiler, save at the end (ENABLE_CHECKPOINT), publish async saves."""
        if self.profiler is not None:
            self.profiler.close()
        if self.ckpt is None:
            return
        if status not in ("interrupted", "failed"):
            self._save_if_due()
        last = self.trainer.completed_steps
        saved = {s.step for s in self.ckpt.saves}
        if status == "complete" and self.opts.save_at_end and last not in saved | {self.ckpt.pending_step}:
            self.ckpt.save(self.trainer.state_dict(), last, async_save=False)
        self.ckpt.wait()
        if self.invalid_reason and self.rank == 0:
            self.log(f"run INVALID: {self.invalid_reason}")

    def summary_fields(self) -> dict[str, Any]:
        """Fields of :class:`llmb.records.RunSummary` the hooks know."""
        out: dict[str, Any] = {"invalid_reason": self.invalid_reason, "resumed_from": self.resumed}
        if self.ckpt is not None:
            out["checkpoints"] = tuple(CheckpointSave(**vars(s)) for s in self.ckpt.saves)
        if self.profiler is not None:
            out["profiled_steps"] = (self.profiler.start, self.profiler.stop)
        if self.opts.profile or self.opts.nccl_trace:
            # Profilers and NCCL tracing slow the steps down: never compare these timings.
            out["timing_comparable"] = False
            out["timing_note"] = "profiled run: step times include profiler overhead and are not comparable"
        out["notes"] = tuple(self.notes)
        return out
