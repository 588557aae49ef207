"""Engine commands: ``llmb run`` (train a workload or its CPU proxy) and ``llmb doctor``.

Recipe knobs also come from the reference recipes' environment variables: DTYPE, MODEL_SIZE,
JOB_TOTAL_GPUS, GPUS_PER_NODE, MAX_STEPS and the layout overrides TP, PP, CP, VP, EP, ETP,
MBS, GBS. Precedence: command-line option > environment variable > recipe.

Checkpoints, profiling and health (llmb.engine.options, .checkpoint, .profiling, .health) take
the recipes' ENABLE_CHECKPOINT, LOAD_CHECKPOINT_PATH, ENABLE_PROFILE, PROFILE_START_STEP,
PROFILE_STOP_STEP and ENABLE_NCCLTRACE through llmb.launch.knobs, with the same precedence. A
run whose loss or gradient norm turns NaN/inf exits with code 3 and an INVALID summary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from llmb.cli.app import JSON_OPTION, app, console, err_console, print_json
from llmb.errors import LlmbError, SystemFailure

def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


def result_table(summary: dict[str, Any]) -> Table:
    """The reference-style result table of one run."""
    lay = summary["layout"]
    table = Table(title=f"llmb run: {summary['workload']} {summary['size']} {summary['dtype']} "
                  f"on {summary['world_size']} rank(s) ({summary['status']})", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    etp = f" ETP{lay['etp']}" if lay.get("etp") else ""
    layout = (f"TP{lay['tp']} PP{lay['pp']} CP{lay['cp']} EP{lay['ep']}{etp} VP{lay['vp'] or 1} "
              f"DP{lay['dp']}  MBS{lay['mbs']} GBS{lay['gbs']} GA{lay['ga']}")
    table.add_row("layout", layout)
    w = summary["window"]
    m = summary["metrics"]
    if w is None or m is None:
        table.add_row("steps completed", f"{summary['steps_completed']} (none in the statistics window)")
        _checkpoint_rows(table, summary)
        return table
    table.add_row("steps (window)", f"{w['first_step']}-{w['last_step']} of {summary['steps_planned']}"
                  + ("" if summary["window_complete"] else " (incomplete)"))
    spread = f" ± {w['std']:.4f}" if w["std"] is not None else ""
    table.add_row("step time (s)", f"{w['mean']:.4f}{spread} (median {w['median']:.4f})")
    table.add_row("tokens/s", _fmt_rate(m["tokens_per_s"]))
    table.add_row("tokens/s per device", _fmt_rate(m["tokens_per_s_per_gpu"]))
    table.add_row(f"TFLOP/s per device ({m['convention']} FLOPs)", f"{m['tflops_per_gpu']:.4f}")
    table.add_row(f"MFU (of {summary['mfu_denominator']['label']}, "
                  f"{summary['mfu_denominator']['flops'] / 1e9:.0f} GFLOP/s)", f"{m['mfu'] * 100:.2f} %")
    table.add_row("days to train 1T tokens", f"{m['days_per_1t_tokens']:,.1f}")
    table.add_row("loss (first -> last)", f"{summary['first_loss']:.4f} -> {summary['final_loss']:.4f}")
    table.add_row("wall time (s)", f"{summary['wall_time_s']:.1f}")
    _checkpoint_rows(table, summary)
    return table


def _checkpoint_rows(table: Table, summary: dict[str, Any]) -> None:
    """Rows for checkpoints, resume, profiling and validity (llmb.engine.hooks fields)."""
    if summary.get("resumed_from"):
        r = summary["resumed_from"]
        table.add_row("resumed from", f"step {r['step']} ({r['load_time_s']:.2f} s to load) {r['path']}")
    for c in summary.get("checkpoints", []):
        size = f", {c['bytes'] / 2**20:.1f} MiB" if c.get("bytes") is not None else ""
        table.add_row(f"checkpoint step {c['step']}", f"{c['duration_s']:.2f} s{size}")
    if summary.get("timing_comparable") is False:
        table.add_row("timing", "NOT COMPARABLE: " + summary.get("timing_note", "profiled run"))
    if summary.get("invalid_reason"):
        table.add_row("INVALID", summary["invalid_reason"])


@app.command("run")
def run_cmd(
    workload: Optional[str] = typer.Argument(None, help="catalog workload (default llama3.1)"),
    size: Optional[str] = typer.Option(None, "--size", help="model size (env MODEL_SIZE)"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bf16, fp32 or fp8 (env DTYPE)"),
    proxy: str = typer.Option("default", "--proxy", help="CPU proxy name (proxies.yaml), or 'none' for full size"),
    gpu_type: Optional[str] = typer.Option(None, "--gpu-type", help="whose recipe layout to follow, e.g. h100, gb200 (env GPU_TYPE)"),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="processes on this host (env JOB_TOTAL_GPUS)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="training steps (env MAX_STEPS)"),
    tp: Optional[int] = typer.Option(None, "--tp", help="layout override (env TP)"),
    pp: Optional[int] = typer.Option(None, "--pp", help="layout override (env PP)"),
    cp: Optional[int] = typer.Option(None, "--cp", help="layout override (env CP)"),
    vp: Optional[int] = typer.Option(None, "--vp", help="layout override (env VP)"),
    ep: Optional[int] = typer.Option(None, "--ep", help="layout override (env EP)"),
    etp: Optional[int] = typer.Option(None, "--etp", help="layout override (env ETP)"),
    mbs: Optional[int] = typer.Option(None, "--mbs", help="layout override (env MBS)"),
    gbs: Optional[int] = typer.Option(None, "--gbs", help="layout override (env GBS)"),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", help="steps left out of the statistics"),
    window: Optional[int] = typer.Option(None, "--window", help="steps in the statistics window"),
    seed: int = typer.Option(1234, "--seed"),
    lr: float = typer.Option(3e-4, "--lr", help="peak learning rate"),
    ddp: bool = typer.Option(False, "--ddp", help="plain DDP instead of FSDP2 for data parallelism"),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile every transformer block"),
    convention: str = typer.Option("recipe", "--flops", help="FLOPs convention: recipe, megatron, 6n"),
    data: Optional[str] = typer.Option(None, "--data", help="indexed dataset PREFIX (.bin/.idx), or 'sample' for the shipped real text (default: synthetic tokens)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="resolve and print the config; do not train"),
    # Checkpoints, health, profiling (llmb.engine.options)
    save: bool = typer.Option(False, "--save", help="save a checkpoint at the end (env ENABLE_CHECKPOINT)"),
    save_every: Optional[int] = typer.Option(None, "--save-every", help="save a checkpoint every N steps"),
    load: Optional[str] = typer.Option(None, "--load", help="start from this checkpoint, checkpoints or experiment folder (env LOAD_CHECKPOINT_PATH)"),
    resume: bool = typer.Option(False, "--resume", help="start from the latest complete checkpoint of this experiment's earlier runs"),
    async_save: bool = typer.Option(False, "--async-save", help="write checkpoints in the background (dcp.async_save)"),
    keep_last: Optional[int] = typer.Option(None, "--keep-last", help="keep only the newest K checkpoints"),
    max_restarts: int = typer.Option(0, "--max-restarts", help="torchrun elastic restarts; workers resume from the latest checkpoint"),
    pg_timeout_s: float = typer.Option(600.0, "--pg-timeout-s", help="seconds before a hung collective fails"),
    profile: bool = typer.Option(False, "--profile", help="torch.profiler traces of the profiled steps (env ENABLE_PROFILE)"),
    profile_start: Optional[int] = typer.Option(None, "--profile-start-step", help="first profiled step (env PROFILE_START_STEP)"),
    profile_stop: Optional[int] = typer.Option(None, "--profile-stop-step", help="last profiled step (env PROFILE_STOP_STEP)"),
    profile_ranks: Optional[str] = typer.Option(None, "--profile-ranks", help="ranks to profile, e.g. 0,1 or all (default 0)"),
    memory_snapshot: bool = typer.Option(False, "--memory-snapshot", help="CUDA memory snapshot of the profiled steps"),
    nccl_trace: bool = typer.Option(False, "--nccl-trace", help="NCCL INFO trace of collectives, GPU only (env ENABLE_NCCLTRACE)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train a workload: its CPU proxy by default, in-process on 1 rank or via torchrun."""
    from llmb.engine.config import DEFAULT_WORKLOAD, RunRequest, resolve_run

    from llmb.launch.knobs import LAYOUT_FIELDS, resolve_knobs

    cli_layout = dict(tp=tp, pp=pp, cp=cp, vp=vp, ep=ep, etp=etp, mbs=mbs, gbs=gbs)
    knobs, _ = resolve_knobs({**cli_layout, "size": size, "dtype": dtype, "max_steps": steps, "gpu_type": gpu_type}, os.environ)
    total_gpus, per_node = knobs.get("gpus"), knobs.get("gpus_per_node")
    if total_gpus and per_node and total_gpus > per_node and nproc is None:
        raise LlmbError(
            f"JOB_TOTAL_GPUS={total_gpus} spans several nodes of {per_node}; start multi-node runs through a launcher"
        )
    overrides = {k: knobs.get(k) for k in LAYOUT_FIELDS}
    full = proxy.lower() == "none"
    world = nproc or total_gpus or (None if full else 1)
    req = RunRequest(
        workload=workload or DEFAULT_WORKLOAD,
        size=knobs.get("size"),
        dtype=knobs.get("dtype"),
        gpu_type=knobs.get("gpu_type"),
        proxy=None if full else proxy,
        nproc=world or 1,
        gpus=total_gpus if full else None,
        overrides=overrides,
        steps=knobs.get("max_steps"),
        seed=seed, lr=lr, warmup_steps=warmup_steps, window=window, data=data,
        dp_mode="ddp" if ddp else "fsdp", compile=compile_, flops_convention=convention,
        options=_run_options(
            save=save, save_every=save_every, load=load, resume=resume, async_save=async_save,
            keep_last=keep_last, max_restarts=max_restarts, pg_timeout_s=pg_timeout_s, profile=profile,
            profile_start=profile_start, profile_stop=profile_stop, profile_ranks=profile_ranks,
            memory_snapshot=memory_snapshot, nccl_trace=nccl_trace,
        ),
    )
    if full and world is None:
        resolved = resolve_run(req)  # the recipe's own scale decides the process count
        req = RunRequest(**{**req.__dict__, "nproc": resolved.world})
    run = resolve_run(req)
    if run.recipe.dtype == "fp8":
        import torch

        if not torch.cuda.is_available():
            raise LlmbError("fp8 needs a CUDA GPU with FP8 tensor cores (H100 or newer) and torchao; on CPU use --dtype bf16 or fp32")
    if dry_run:
        print_json(run.as_dict())
        return

    if run.request.data:  # a missing or unfitting dataset is a mistake to report before any folder exists
        from llmb.engine.data import token_batches

        token_batches(run.request.data, vocab=run.model.vocab, seq_len=run.model.seq_len,
                      micro_batch=run.layout.mbs, seed=run.request.seed, dp_rank=0, dp_size=1)
    from llmb.launch.experiment import create_experiment_dir, write_json

    exp_dir = create_experiment_dir(run.recipe.workload.name, run.size_label, run.recipe.dtype, run.world)
    write_json(exp_dir / "request.json", req.__dict__)
    if not as_json:
        console.print(f"[bold]llmb run[/] {run.recipe.workload.name} {run.size_label} {run.recipe.dtype}, "
                      f"{run.world} rank(s) -> {exp_dir}", highlight=False)
        for note in run.notes:
            console.print(f"  note: {note}", highlight=False)
    from llmb.engine.profiling import nsys_available

    wrap_nsys = run.options.profile and nsys_available()  # GPU hosts only; never run here
    if run.world == 1 and not wrap_nsys:
        from llmb.engine.runner import train

        # With --json, stdout carries only the summary; step lines go to stderr.
        summary = train(run, exp_dir, progress=console.is_terminal and not as_json,
                        stream=sys.stderr if as_json else None)
    else:
        summary = _torchrun(run.world, exp_dir, quiet_stdout=as_json, options=run.options, nsys=wrap_nsys)
    if as_json:
        print_json(summary)
    else:
        console.print(result_table(summary))
        console.print(f"experiment: {summary['experiment_dir']}", highlight=False, soft_wrap=True)
        for warning in summary.get("warnings", []):
            err_console.print(f"warning: {warning}", highlight=False, soft_wrap=True)
    if summary["status"] == "interrupted":
        err_console.print(f"interrupted after {summary['steps_completed']} step(s); summary written", highlight=False)
        # SystemExit, not typer.Exit: the entry point drops typer.Exit codes in this mode.
        raise SystemExit(130)
    if summary["status"] == "invalid":
        from llmb.engine.health import RunInvalid

        raise RunInvalid(summary.get("invalid_reason", "the run is INVALID"))


def _run_options(**cli: Any) -> dict[str, Any]:
    """RunOptions fields from the command line over the recipes' environment variables."""
    from llmb.engine.options import parse_ranks
    from llmb.launch.knobs import resolve_knobs

    knobs, _ = resolve_knobs({
        "checkpoint": cli["save"] or None, "load_checkpoint": cli["load"], "profile": cli["profile"] or None,
        "profile_start_step": cli["profile_start"], "profile_stop_step": cli["profile_stop"],
        "nccl_trace": cli["nccl_trace"] or None,
    }, os.environ)
    return {
        "save_at_end": bool(knobs.get("checkpoint")), "save_every": cli["save_every"],
        "load": knobs.get("load_checkpoint"), "resume": cli["resume"], "async_save": cli["async_save"],
        "keep_last": cli["keep_last"], "max_restarts": cli["max_restarts"], "pg_timeout_s": cli["pg_timeout_s"],
        "profile": bool(knobs.get("profile")), "profile_start_step": knobs.get("profile_start_step"),
        "profile_stop_step": knobs.get("profile_stop_step"), "profile_ranks": parse_ranks(cli["profile_ranks"]),
        "memory_snapshot": cli["memory_snapshot"], "nccl_trace": bool(knobs.get("nccl_trace")),
    }


def _torchrun(nproc: int, exp_dir: Path, quiet_stdout: bool = False, options=None, nsys: bool = False) -> dict[str, Any]:
    env = dict(os.environ)
    # Share the cores among the ranks instead of oversubscribing them.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    restarts = options.max_restarts if options else 0
    if restarts:
        # torchrun's shared rendezvous store keeps the first attempt's gloo/NCCL peer addresses,
        # so a restarted group tries to connect to dead ranks (pytorch/pytorch#167288, seen
        # here with gloo): let rank 0 host a fresh store for every attempt instead.
        env.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           f"--max-restarts={restarts}", "-m", "llmb.engine.worker", str(exp_dir)]
    if options is not None and options.nccl_trace:
        from llmb.engine.profiling import nccl_trace_env

        env.update(nccl_trace_env(exp_dir))
    if nsys:  # GPU hosts with nsys on PATH (not run here): same steps via cudaProfilerStart/Stop
        from llmb.engine.profiling import nsys_prefix

        cmd = nsys_prefix(exp_dir) + cmd
    # torchrun gets its own session: a Ctrl-C reaches only this process, which passes it on to
    # the workers (they stop after the current step and write the summary). torchrun then
    # sees its workers end normally instead of printing its own signal traceback.
    proc = subprocess.Popen(cmd, env=env, stdout=sys.stderr if quiet_stdout else None, start_new_session=True)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        _signal_children(proc.pid, signal.SIGINT)
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: stop now
            proc.terminate()
            code = proc.wait()
    summary_file = exp_dir / "summary.json"
    if not summary_file.exists():
        if code == 1:
            raise LlmbError(f"the training workers stopped on a configuration error (see above); {exp_dir}")
        raise SystemFailure(f"torchrun exited with code {code} before writing {summary_file}")
    return json.loads(summary_file.read_text())


def _signal_children(pid: int, sig: int) -> None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # not Linux, or already gone: fall back to torchrun itself
        children = [str(pid)]
    for child in children:
        try:
            os.kill(int(child), sig)
        except ProcessLookupError:
            pass


@app.command("doctor")
def doctor_cmd(as_json: bool = JSON_OPTION) -> None:
    """Print the environment and measure (and cache) the CPU GEMM ceiling used for MFU."""
    import torch

    from llmb.engine.ceiling import cache_file, gemm_ceiling
    from llmb.engine.environment import torch_facts
    from llmb.launch.experiment import host_facts

    facts = {**host_facts(), **torch_facts()}
    ceilings = {}
    for dtype in ("fp32", "bf16"):
        t0 = time.perf_counter()
        flops, _ = gemm_ceiling(dtype, refresh=True)
        ceilings[dtype] = {"gflops": flops / 1e9, "measure_s": time.perf_counter() - t0}
    facts["gemm_ceiling_measured"] = ceilings
    facts["gemm_ceiling_cache"] = str(cache_file())
    if as_json:
        print_json(facts)
        return
    table = Table(title="llmb doctor", show_header=False)
    table.add_column("fact")
    table.add_column("value")
    for key in ("llmb_version", "python", "torch", "platform", "cpu_count", "torch_threads",
                "cpu_capability", "cuda_available", "cuda_devices"):
        table.add_row(key, str(facts.get(key)))
    table.add_row("backends", ", ".join(k for k, v in facts["backends"].items() if v) or "none")
    for dtype, c in ceilings.items():
        table.add_row(f"GEMM ceiling {dtype} (measured, {torch.get_num_threads()} threads)", f"{c['gflops']:.1f} GFLOP/s")
    table.add_row("cached in", facts["gemm_ceiling_cache"])
    console.print(table)
    console.print("MFU on CPU divides by the measured GEMM ceiling of the run's precision.", highlight=False)
