"""Run a resolved training job on this rank: the step loop, its timing, and the run's records.

The loop: set up the process group and mesh, build the :class:`~llmb.engine.train.Trainer`,
ask the :class:`~llmb.engine.hooks.RunHooks` where to start, then per step: hooks, a timed
step, hooks, and one record to the :class:`~llmb.engine.recorder.StepRecorder` (console,
``log.txt``, ``metrics.jsonl``, TensorBoard). At the end, also after Ctrl-C or a NaN, rank 0
writes ``summary.json`` (:class:`~llmb.records.RunSummary`). Throughput numbers come from
:func:`llmb.plan.metrics.run_metrics` only.

Timing: a step is timed from fetching its first micro-batch to the end of the optimizer
step, with device synchronization at both ends; the reported step time is the maximum over
ranks (the job is as fast as its slowest rank). Hooks run outside the timed region, except
the profiler, which is why a profiled run's summary says its timing is not comparable.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from llmb.datafile import write_json
from llmb.engine.ceiling import gemm_ceiling
from llmb.engine.environment import device_for, device_name, environment_facts, peak_memory_gib, synchronize
from llmb.engine.hooks import RunHooks
from llmb.engine.parallel import build_parallel
from llmb.engine.profiling import nccl_trace_env
from llmb.engine.recorder import StepRecorder
from llmb.engine.train import Trainer
from llmb.errors import LlmbError, SystemFailure
from llmb.plan.metrics import run_metrics
from llmb.plan.run import ResolvedRun
from llmb.records import CONFIG_FILE, SUMMARY_FILE, Denominator, Hardware, RunConfig, RunSummary, WindowSummary

ENVIRONMENT_FILE = "environment.json"


def mfu_denominator(run: ResolvedRun, device: torch.device) -> Denominator:
    """The datasheet peak on a GPU; on a CPU the measured GEMM ceiling of the run's precision."""
    if device.type == "cuda":
        return Denominator(flops=run.recipe.peak_flops,
                           label=f"{run.recipe.gpu.name} dense {run.recipe.dtype} datasheet peak")
    dtype = "fp32" if run.recipe.dtype == "fp32" else "bf16"
    flops, _ = gemm_ceiling(dtype)
    return Denominator(flops=flops, label=f"measured CPU GEMM ceiling ({dtype}, {torch.get_num_threads()} threads)")


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


def window_stats(step_times_s: list[float], warmup: int, window: int) -> WindowSummary | None:
    """Statistics of steps ``warmup+1 .. warmup+window`` (1-based); None if none completed.
    The same summary (sample std, ``None`` for one step) as every parsed log's."""
    from llmb.results.stats import summarize

    times = step_times_s[warmup : warmup + window]
    summary = summarize(times)
    if summary is None:
        return None
    return WindowSummary(first_step=warmup + 1, last_step=warmup + len(times), **summary.as_dict())


def _raise_interrupt(signum, frame):  # torchrun stops workers with SIGTERM
    raise KeyboardInterrupt


def train(run: ResolvedRun, exp_dir: Path | None, progress: bool = False, stream=None) -> RunSummary:
    """Train ``run`` on this rank; returns the summary (rank 0 also writes it). Step lines go
    to ``stream`` (stdout by default) or above the progress bar."""
    device = device_for(run.request.device)
    if run.options.nccl_trace and exp_dir is not None:
        os.environ.update(nccl_trace_env(exp_dir))  # read by NCCL when its communicators start
    init_distributed(device, run.options.pg_timeout_s)
    rank = dist.get_rank() if dist.is_initialized() else 0
    signal.signal(signal.SIGTERM, _raise_interrupt)
    t_start = time.perf_counter()
    recorder = None
    try:
        par = build_parallel(run.parallel_dims, device.type)
        denominator = mfu_denominator(run, device)
        hardware = Hardware(gpu_type=run.recipe.gpu_type, device=device.type, device_name=device_name(device),
                            mfu_denominator=denominator)
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
            # The recorded run, now with what it runs on (results read the MFU denominator).
            run.config(hardware).write(exp_dir / CONFIG_FILE)
            write_json(exp_dir / ENVIRONMENT_FILE, environment_facts())
        recorder = StepRecorder(exp_dir, lead=rank == 0, progress=progress, stream=stream)
        hooks = RunHooks(run, trainer, exp_dir, rank, device, log=recorder.note)
        first_step = hooks.start()
        recorder.start(run.steps - first_step + 1)
        step_times: list[float] = []
        losses: list[float] = []
        status, failure = "complete", None
        try:
            for step in range(first_step, run.steps + 1):
                if hooks.should_stop():
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
                    gpus=run.world, flops_per_sample=flops_per_sample, peak_flops=denominator.flops,
                    convention=run.request.flops_convention,
                )
                recorder.step(step, run.steps, m, result.loss, result.grad_norm, result.lr, peak_memory_gib(device))
        except KeyboardInterrupt:
            status = "interrupted"
            # torchrun follows the user's Ctrl-C with SIGTERM: let the summary be written.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except SystemFailure as exc:  # e.g. a checkpoint that could not be written: disk full
            status, failure = "failed", str(exc)
        finally:
            recorder.stop_progress()
        status = hooks.status(status)
        try:
            hooks.finish(status)
        except SystemFailure as exc:
            status, failure = "failed", str(exc)
        if failure is not None:
            recorder.note(f"error: {failure}")
        summary = _summary(run, status, step_times, losses, hardware, flops_per_sample, t_start, exp_dir,
                           {**hooks.summary_fields(), "failure": failure})
        if lead:
            try:
                summary.write(exp_dir / SUMMARY_FILE)
            except OSError as exc:
                raise SystemFailure(f"{exp_dir / SUMMARY_FILE} could not be written: {exc.strerror or exc}"
                                    + (f" (the run had stopped: {failure})" if failure else "")) from None
        if dist.is_initialized() and status == "complete":
            dist.barrier()  # no rank tears down the process group while a peer still uses it
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return summary
    finally:
        if recorder is not None:
            recorder.close()
        if dist.is_initialized():
            dist.destroy_process_group()


def _summary(run: ResolvedRun, status: str, step_times: list[float], losses: list[float], hardware: Hardware,
             flops_per_sample: float, t_start: float, exp_dir: Path | None, hook_fields: dict) -> RunSummary:
    stats = window_stats(step_times, run.warmup_steps, run.window)
    peak = hardware.mfu_denominator
    metrics = None
    if stats is not None:
        metrics = run_metrics(
            step_time_s=stats.mean, seq_len=run.model.seq_len, gbs=run.layout.gbs, gpus=run.world,
            flops_per_sample=flops_per_sample, peak_flops=peak.flops, convention=run.request.flops_convention,
        )
    warnings = []
    if metrics is not None and metrics.mfu > 1:
        # Only a CPU's measured ceiling can be beaten: it was measured while something else
        # loaded the cores. Say so rather than print an impossible number silently.
        warnings.append(
            f"MFU above 100 %: the run achieved more than the {peak.label} of {peak.flops / 1e9:.0f} GFLOP/s; "
            "that ceiling was measured under load - re-measure it with `llmb doctor` on a quiet machine"
        )
    cfg: RunConfig = run.config(hardware)
    return RunSummary(
        status=status, warnings=tuple(warnings), workload=cfg.workload, size=cfg.size, proxy=cfg.proxy,
        size_label=cfg.size_label, dtype=cfg.dtype, world_size=cfg.world_size, hardware=hardware, layout=cfg.layout,
        steps_planned=run.steps, steps_completed=len(step_times), window=stats,
        window_complete=stats is not None and stats.count == run.window, metrics=metrics,
        flops_per_sample=flops_per_sample, flops_convention=run.request.flops_convention,
        first_loss=losses[0] if losses else None, final_loss=losses[-1] if losses else None,
        wall_time_s=time.perf_counter() - t_start, experiment_dir=str(exp_dir) if exp_dir else None,
        **hook_fields,
    )


def worker_main(argv: list[str] | None = None) -> int:
    """Entry of each torchrun worker: ``python -m llmb.engine.worker EXPERIMENT_DIR``. The
    worker runs exactly the run recorded in the folder's ``config.json``."""
    from llmb.engine import health

    args = sys.argv[1:] if argv is None else argv
    exp_dir = Path(args[0])
    try:
        run = ResolvedRun.from_config(RunConfig.read(exp_dir / CONFIG_FILE))
    except LlmbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        previous = health.invalid_before_restart(exp_dir)
        if previous:  # a restart would only repeat the NaN: stop (torchrun burns its restarts fast)
            print(f"error: {previous}", file=sys.stderr)
            return health.EXIT_INVALID
        summary = train(run, exp_dir, progress=False)
    except LlmbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SystemFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        line = health.failure_line(exc, run.options.pg_timeout_s)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    if summary.status == "invalid":
        print(f"error: {summary.invalid_reason}", file=sys.stderr)
        return health.EXIT_INVALID
    if summary.status == "failed":
        print(f"error: {summary.failure}", file=sys.stderr)
        return 2
    return 0
