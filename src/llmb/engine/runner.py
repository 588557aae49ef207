"""Run a resolved training job on this rank: set up the process group and mesh, train, time,
log, and write the experiment's records.

Records (rank 0): ``log.txt`` and stdout get one :func:`~llmb.logline.format_step_line` line
per step; ``metrics.jsonl`` one JSON record per step; ``tensorboard/`` event files;
``summary.json`` the window statistics and derived metrics (also after Ctrl-C, marked
``interrupted``). Throughput numbers come from :func:`llmb.plan.metrics.run_metrics` only.

Timing: a step is timed from fetching its first micro-batch to the end of the optimizer
step, with device synchronization at both ends; the reported step time is the maximum over
ranks (the job is as fast as its slowest rank).

Checkpoints, profiling windows and health checks are :class:`~llmb.engine.hooks.RunHooks`
called around each step (outside the timed region, except the profiler, which is why a
profiled run's summary says its timing is not comparable).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from llmb.engine.ceiling import gemm_ceiling
from llmb.engine.config import ResolvedRun
from llmb.engine.environment import device_for, peak_memory_gib, synchronize, torch_facts
from llmb.engine.hooks import RunHooks
from llmb.engine.parallel import build_parallel
from llmb.engine.train import Trainer
from llmb.errors import LlmbError
from llmb.launch.experiment import write_experiment_files, write_json
from llmb.logline import format_step_line
from llmb.plan.metrics import run_metrics


@dataclass(frozen=True)
class Peak:
    flops: float  # FLOP/s per device
    label: str  # what the MFU divides by, said wherever MFU is printed


def peak_for(run: ResolvedRun, device: torch.device) -> Peak:
    if device.type == "cuda":
        return Peak(run.recipe.peak_flops, f"{run.recipe.gpu.name} dense {run.recipe.dtype} datasheet peak")
    dtype = "fp32" if run.recipe.dtype == "fp32" else "bf16"
    flops, _ = gemm_ceiling(dtype)
    return Peak(flops, f"measured CPU GEMM ceiling ({dtype}, {torch.get_num_threads()} threads)")


def init_distributed(device: torch.device, timeout_s: float | None = None) -> None:
    """Join the process group torchrun describes (no-op for a single process). A collective
    that waits longer than ``timeout_s`` seconds fails (see llmb.engine.health)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    kwargs = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # gloo next to NCCL: DCP's async save needs a CPU backend.
        dist.init_process_group("cpu:gloo,cuda:nccl", **kwargs)
    else:
        dist.init_process_group("gloo", **kwargs)


def window_stats(step_times_s: list[float], warmup: int, window: int) -> dict[str, Any] | None:
    """Statistics of steps ``warmup+1 .. warmup+window`` (1-based); None if none completed.
    The same summary (sample std, ``None`` for one step) as every parsed log's."""
    from llmb.results.stats import summarize

    times = step_times_s[warmup : warmup + window]
    summary = summarize(times)
    if summary is None:
        return None
    return {"first_step": warmup + 1, "last_step": warmup + len(times), **summary.as_dict()}


class _Progress:
    """A rich progress bar on a terminal (rank 0); plain printing otherwise."""

    def __init__(self, total: int, enabled: bool, stream=None):
        self.bar = None
        self.stream = stream
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                transient=True,
            )
            self.task = self.bar.add_task("steps", total=total)
            self.bar.start()

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, highlight=False, soft_wrap=True, markup=False)
            self.bar.advance(self.task)
        else:
            print(text, flush=True, file=self.stream or sys.stdout)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _raise_interrupt(signum, frame):  # torchrun stops workers with SIGTERM
    raise KeyboardInterrupt


def train(run: ResolvedRun, exp_dir: Path | None, progress: bool = False, stream=None) -> dict[str, Any]:
    """Train ``run`` on this rank; returns the summary (rank 0 also writes it). Step lines go
    to ``stream`` (stdout by default) or above the progress bar."""
    device = device_for(run.request.device)
    init_distributed(device, run.options.pg_timeout_s)
    rank = dist.get_rank() if dist.is_initialized() else 0
    signal.signal(signal.SIGTERM, _raise_interrupt)
    t_start = time.perf_counter()
    writer = None
    try:
        par = build_parallel(run.parallel_dims, device.type)
        peak = peak_for(run, device)
        flops_per_sample = run.recipe.flops_per_sample(run.request.flops_convention)
        data = None
        if run.request.data:
            from llmb.engine.data import token_batches

            data = token_batches(
                run.request.data, vocab=run.model.vocab, seq_len=run.model.seq_len, micro_batch=run.layout.mbs,
                seed=run.request.seed, dp_rank=par.dp_rank, dp_size=par.dims.dp,
            )
        trainer = Trainer(run, par, device, data=data)
        lead = rank == 0 and exp_dir is not None
        if lead:
            config = run.as_dict()
            config["mfu_denominator"] = {"flops": peak.flops, "label": peak.label}
            write_experiment_files(exp_dir, config, torch_facts())
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(exp_dir / "tensorboard"))
        log = open(exp_dir / "log.txt", "a", encoding="utf-8") if lead else None
        metrics_file = open(exp_dir / "metrics.jsonl", "a", encoding="utf-8") if lead else None
        # Checkpoints, profiling, health (llmb.engine.hooks): may load a checkpoint.
        hooks = RunHooks(run, trainer, exp_dir, rank, device, log_file=log, stream=stream)
        bar = _Progress(run.steps - hooks.first_step + 1, progress and rank == 0, stream)
        step_times: list[float] = []
        losses: list[float] = []
        status = "complete"
        step = hooks.first_step - 1
        try:
            for step in range(hooks.first_step, run.steps + 1):
                if hooks.should_stop():
                    step -= 1
                    break
                hooks.before_step(step)
                synchronize(device)
                t0 = time.perf_counter()
                result = trainer.step()
                synchronize(device)
                # On the device: NCCL reduces GPU tensors only.
                elapsed = torch.tensor(time.perf_counter() - t0, dtype=torch.float64, device=device)
                if dist.is_initialized():
                    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
                step_time = float(elapsed)
                result = hooks.after_step(step, result)
                step_times.append(step_time)
                losses.append(result.loss)
                m = run_metrics(
                    step_time_s=step_time, seq_len=run.model.seq_len, gbs=run.layout.gbs,
                    gpus=run.world, flops_per_sample=flops_per_sample, peak_flops=peak.flops,
                    convention=run.request.flops_convention,
                )
                mem = peak_memory_gib(device)
                if rank != 0:
                    continue
                line = format_step_line(
                    step, run.steps, step_time_s=step_time, tokens_per_s=m.tokens_per_s,
                    tflops_per_device=m.tflops_per_gpu, mfu_pct=m.mfu * 100, loss=result.loss,
                    grad_norm=result.grad_norm, peak_mem_gib=mem,
                )
                bar.line(line)
                if log:
                    log.write(line + "\n")
                    log.flush()
                if metrics_file:
                    record = {
                        "step": step, "step_time_s": step_time, "tokens_per_s": m.tokens_per_s,
                        "tflops_per_device": m.tflops_per_gpu, "mfu": m.mfu, "loss": result.loss,
                        "grad_norm": result.grad_norm, "lr": result.lr, "peak_mem_gib": mem,
                    }
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                if writer:
                    for key in ("loss", "grad_norm", "lr"):
                        writer.add_scalar(f"train/{key}", getattr(result, key), step)
                    writer.add_scalar("perf/step_time_s", step_time, step)
                    writer.add_scalar("perf/tokens_per_s", m.tokens_per_s, step)
                    writer.add_scalar("perf/mfu_pct", m.mfu * 100, step)
        except KeyboardInterrupt:
            status = "interrupted"
            # torchrun follows the user's Ctrl-C with SIGTERM: let the summary be written.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        finally:
            bar.close()
        status = hooks.status(status)
        hooks.finish(status, step)
        summary = _summary(run, status, step_times, losses, peak, flops_per_sample, t_start, exp_dir)
        summary.update(hooks.summary_fields())
        if lead:
            write_json(exp_dir / "summary.json", summary)
        if dist.is_initialized() and status == "complete":
            dist.barrier()  # no rank tears down the process group while a peer still uses it
        for f in (log, metrics_file):
            if f:
                f.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return summary
    finally:
        if writer is not None:
            writer.close()
        if dist.is_initialized():
            dist.destroy_process_group()


def _summary(run, status, step_times, losses, peak: Peak, flops_per_sample, t_start, exp_dir) -> dict:
    stats = window_stats(step_times, run.warmup_steps, run.window)
    metrics = None
    if stats is not None:
        metrics = run_metrics(
            step_time_s=stats["mean"], seq_len=run.model.seq_len, gbs=run.layout.gbs, gpus=run.world,
            flops_per_sample=flops_per_sample, peak_flops=peak.flops,
            convention=run.request.flops_convention,
        ).as_dict()
    warnings = []
    if metrics is not None and metrics["mfu"] > 1:
        # Only a CPU's measured ceiling can be beaten: it was measured while something else
        # loaded the cores. Say so rather than print an impossible number silently.
        warnings.append(
            f"MFU above 100 %: the run achieved more than the {peak.label} of {peak.flops / 1e9:.0f} GFLOP/s; "
            "that ceiling was measured under load - re-measure it with `llmb doctor` on a quiet machine"
        )
    return {
        "status": status,
        "warnings": warnings,
        "workload": run.recipe.workload.name,
        "size": run.size_label,
        "dtype": run.recipe.dtype,
        "proxy": run.proxy,
        "world_size": run.world,
        "layout": {
            **run.layout.as_dict(), "dp": run.derived.dp, "ga": run.derived.ga,
            "etp": run.derived.etp if run.model.moe is not None else None,
        },
        "steps_planned": run.steps,
        "steps_completed": len(step_times),
        "window": stats,
        "window_complete": stats is not None and stats["count"] == run.window,
        "metrics": metrics,
        "flops_per_sample": flops_per_sample,
        "flops_convention": run.request.flops_convention,
        "mfu_denominator": {"flops": peak.flops, "label": peak.label},
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "wall_time_s": time.perf_counter() - t_start,
        "experiment_dir": str(exp_dir) if exp_dir else None,
    }


def worker_main(argv: list[str] | None = None) -> int:
    """Entry of each torchrun worker: ``python -m llmb.engine.worker EXPERIMENT_DIR``."""
    from llmb.engine.config import RunRequest, resolve_run

    args = sys.argv[1:] if argv is None else argv
    exp_dir = Path(args[0])
    config = json.loads((exp_dir / "request.json").read_text())
    run = resolve_run(RunRequest(**config))
    from llmb.engine import health

    try:
        previous = health.invalid_before_restart(exp_dir)
        if previous:  # a restart would only repeat the NaN: stop (torchrun burns its restarts fast)
            print(f"error: {previous}", file=sys.stderr)
            return health.EXIT_INVALID
        summary = train(run, exp_dir, progress=False)
    except LlmbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        line = health.failure_line(exc, run.options.pg_timeout_s)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    if summary["status"] == "invalid":
        print(f"error: {summary['invalid_reason']}", file=sys.stderr)
        return health.EXIT_INVALID
    return 0
