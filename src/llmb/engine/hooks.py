"""What the step loop calls around each step for checkpoints, profiling and health.

The runner stays a plain loop: it asks :class:`RunHooks` where to start
(:attr:`RunHooks.first_step`, after a load or an elastic restart), calls
:meth:`~RunHooks.before_step` / :meth:`~RunHooks.after_step` around every step and
:meth:`~RunHooks.finish` at the end, and merges :meth:`~RunHooks.summary_fields` into the
summary. Every rank makes the same calls (checkpoints are collective).

Which checkpoint a run starts from, first match wins:

1. an elastic restart (``TORCHELASTIC_RESTART_COUNT`` > 0): the latest complete checkpoint of
   this experiment (the run's own earlier attempt);
2. ``--load PATH`` / LOAD_CHECKPOINT_PATH;
3. ``--resume``: the most recently published checkpoint of an earlier run of this experiment.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from llmb.engine import health
from llmb.engine.checkpoint import CHECKPOINTS_DIR, Checkpointer, latest_checkpoint, latest_of_experiment, resolve_load_path
from llmb.engine.profiling import StepProfiler, nccl_trace_note
from llmb.errors import LlmbError


class RunHooks:
    def __init__(self, run, trainer, exp_dir: Path | None, rank: int, device: torch.device,
                 log_file=None, stream=None):
        self.run, self.rank, self.exp_dir = run, rank, exp_dir
        self.opts = opts = run.options
        self._log_file, self._stream = log_file, stream
        self.invalid_reason: str | None = None
        self.resumed: dict[str, Any] | None = None
        self.notes: list[str] = []
        self.first_step = 1
        self._save_due: int | None = None  # saved before the next step, after its step line
        self._nan_step = health.injected_nan_step()
        path = self._start_checkpoint()
        needs_ckpt = opts.checkpointing or path is not None
        self.ckpt = Checkpointer(trainer, run, exp_dir, rank, log=self.log) if needs_ckpt else None
        if path is not None:
            res = self.ckpt.load(path)
            if res.step >= run.steps and health.restart_count() == 0:
                raise LlmbError(
                    f"the checkpoint holds {res.step} completed steps and the run has {run.steps}: "
                    "nothing left to train (raise --steps)"
                )
            self.first_step = res.step + 1
            self.resumed = {
                "path": str(res.path), "step": res.step, "load_time_s": res.duration_s,
                "saved_world_size": res.saved_world_size, "rng_restored": res.rng_restored,
                "restart_count": health.restart_count(),
            }
        self.profiler = None
        if opts.profile and exp_dir is not None:
            self.profiler = StepProfiler(
                opts.profile_start_step, opts.profile_stop_step, rank, opts.profile_ranks, exp_dir, device,
                memory_snapshot=opts.memory_snapshot, log=self.log,
            )
            if opts.memory_snapshot and device.type != "cuda":
                self.notes.append("--memory-snapshot needs CUDA: not recorded on CPU")
        if opts.nccl_trace:
            self.notes.append(nccl_trace_note(device.type))
        if rank == 0:
            for note in self.notes:
                self.log(f"note: {note}")

    def log(self, text: str) -> None:
        print(text, file=self._stream or sys.stdout, flush=True)
        if self._log_file is not None:
            self._log_file.write(text + "\n")
            self._log_file.flush()

    def _start_checkpoint(self) -> Path | None:
        opts, exp_dir = self.opts, self.exp_dir
        if health.restart_count() > 0 and exp_dir is not None:
            own = latest_checkpoint(exp_dir / CHECKPOINTS_DIR)
            if own is not None:
                return own
        if opts.load:
            return resolve_load_path(opts.load)
        if opts.resume:
            if exp_dir is None:
                raise LlmbError("--resume needs an experiment directory")
            found = latest_of_experiment(exp_dir)
            if found is None:
                raise LlmbError(f"--resume: no complete checkpoint in earlier runs of {exp_dir.parent}")
            return found
        return None

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
            step, self._save_due = self._save_due, None
            self.ckpt.save(step, async_save=self.opts.async_save)

    def status(self, status: str) -> str:
        return "invalid" if self.invalid_reason is not None else status

    def finish(self, status: str, last_step: int) -> None:
        """Close the profiler, save at the end (ENABLE_CHECKPOINT), publish async saves."""
        if self.profiler is not None:
            self.profiler.close()
        if self.ckpt is None:
            return
        if status != "interrupted":
            self._save_if_due()
        saved = {s["step"] for s in self.ckpt.saves}
        if status == "complete" and self.opts.save_at_end and last_step not in saved | {self.ckpt.pending_step}:
            self.ckpt.save(last_step, async_save=False)
        self.ckpt.wait()
        if self.invalid_reason and self.rank == 0:
            self.log(f"run INVALID: {self.invalid_reason}")

    def summary_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.invalid_reason:
            out["invalid_reason"] = self.invalid_reason
        if self.resumed:
            out["resumed_from"] = self.resumed
        if self.ckpt is not None and self.ckpt.saves:
            out["checkpoints"] = self.ckpt.saves
        if self.profiler is not None:
            out["profiled_steps"] = [self.profiler.start, self.profiler.stop]
        if self.opts.profile or self.opts.nccl_trace:
            # Profilers and NCCL tracing slow the steps down: never compare these timings.
            out["timing_comparable"] = False
            out["timing_note"] = "profiled run: step times include profiler overhead and are not comparable"
        if self.notes:
            out["notes"] = self.notes
        return out
