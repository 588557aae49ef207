"""Engine commands: ``llmb run`` (train a workload or its CPU proxy) and ``llmb doctor``.

Recipe knobs also come from the reference recipes' environment variables: DTYPE, MODEL_SIZE,
JOB_TOTAL_GPUS, GPUS_PER_NODE, GPU_TYPE, MAX_STEPS and the layout overrides TP, PP, CP, VP, EP,
ETP, MBS, GBS; checkpoints and profiling take ENABLE_CHECKPOINT, LOAD_CHECKPOINT_PATH,
ENABLE_PROFILE, PROFILE_START_STEP, PROFILE_STOP_STEP and ENABLE_NCCLTRACE
(:mod:`llmb.launch.knobs`). Precedence: command-line option > environment variable > recipe.

The command only parses, calls and prints: the run is resolved and checked by
:mod:`llmb.plan.run`, its folder written by :mod:`llmb.launch.experiment`, its processes
started by :mod:`llmb.launch.local`. A run whose loss or gradient norm turns NaN/inf exits with
code 3 and an INVALID summary.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Optional

import typer
from rich.table import Table

from llmb.cli.app import JSON_OPTION, app, console, err_console, print_json
from llmb.errors import SystemFailure
from llmb.records import RunSummary


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


def result_table(summary: RunSummary) -> Table:
    """The reference-style result table of one run."""
    table = Table(title=f"llmb run: {summary.workload} {summary.size_label} {summary.dtype} "
                  f"on {summary.world_size} rank(s) ({summary.status})", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("layout", summary.layout.label)
    w, m = summary.window, summary.metrics
    if w is None or m is None:
        table.add_row("steps completed", f"{summary.steps_completed} (none in the statistics window)")
        _checkpoint_rows(table, summary)
        return table
    table.add_row("steps (window)", f"{w.first_step}-{w.last_step} of {summary.steps_planned}"
                  + ("" if summary.window_complete else " (incomplete)"))
    spread = f" ± {w.std:.4f}" if w.std is not None else ""
    table.add_row("step time (s)", f"{w.mean:.4f}{spread} (median {w.median:.4f})")
    table.add_row("tokens/s", _fmt_rate(m.tokens_per_s))
    table.add_row("tokens/s per device", _fmt_rate(m.tokens_per_s_per_gpu))
    table.add_row(f"TFLOP/s per device ({m.convention} FLOPs)", f"{m.tflops_per_gpu:.4f}")
    peak = summary.hardware.mfu_denominator
    table.add_row(f"MFU (of {peak.label}, {peak.flops / 1e9:.0f} GFLOP/s)", f"{m.mfu * 100:.2f} %")
    table.add_row("days to train 1T tokens", f"{m.days_per_1t_tokens:,.1f}")
    table.add_row("loss (first -> last)", f"{summary.first_loss:.4f} -> {summary.final_loss:.4f}")
    table.add_row("wall time (s)", f"{summary.wall_time_s:.1f}")
    _checkpoint_rows(table, summary)
    return table


def _checkpoint_rows(table: Table, summary: RunSummary) -> None:
    """Rows for checkpoints, resume, profiling and validity."""
    r = summary.resumed_from
    if r is not None:
        table.add_row("resumed from", f"step {r.step} ({r.load_time_s:.2f} s to load) {r.path}")
    for c in summary.checkpoints:
        size = f", {c.bytes / 2**20:.1f} MiB" if c.bytes is not None else ""
        table.add_row(f"checkpoint step {c.step}", f"{c.duration_s:.2f} s{size}")
    if not summary.timing_comparable:
        table.add_row("timing", "NOT COMPARABLE: " + (summary.timing_note or "profiled run"))
    if summary.invalid_reason:
        table.add_row("INVALID", summary.invalid_reason)
    if summary.failure:
        table.add_row("FAILED", summary.failure)


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
    layers: Optional[int] = typer.Option(None, "--layers", help="transformer layers (the tables' Layers column)"),
    pp_split: str = typer.Option("auto", "--pp-split", help="pipeline split: account (embedding and loss as layers), plain or auto"),
    release: Optional[str] = typer.Option(None, "--release", help="recipe release whose layout and baseline to follow (default: the newest)"),
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
    init_from: Optional[str] = typer.Option(None, "--init-from", help="starting weights of a fresh run: hf:DIR (a transformers checkpoint) or a llmb checkpoint"),
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
    backend: str = typer.Option("llmb", "--backend", help="llmb (this engine), megatron, nemo2, nemo1, maxtext, torchtitan, or recipe (the framework of the workload's baseline)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train a workload: its CPU proxy by default, in-process on 1 rank or via torchrun; or
    launch a framework (--backend) with the same model and layout."""
    from llmb.launch import knobs, local, tracking
    from llmb.launch.experiment import create_experiment

    options = knobs.run_options(dict(
        save_at_end=save, save_every=save_every, load=load, resume=resume, init_from=init_from, async_save=async_save,
        keep_last=keep_last, max_restarts=max_restarts, pg_timeout_s=pg_timeout_s, profile=profile,
        profile_start_step=profile_start, profile_stop_step=profile_stop, profile_ranks=profile_ranks,
        memory_snapshot=memory_snapshot, nccl_trace=nccl_trace,
    ), os.environ)
    request = knobs.run_request(
        workload,
        dict(size=size, dtype=dtype, gpu_type=gpu_type, max_steps=steps,
             tp=tp, pp=pp, cp=cp, vp=vp, ep=ep, etp=etp, mbs=mbs, gbs=gbs, layers=layers),
        os.environ, proxy=None if proxy.lower() == "none" else proxy, nproc=nproc, options=options,
        settings=dict(seed=seed, lr=lr, warmup_steps=warmup_steps, window=window, data=data, pp_split=pp_split, release=release,
                      dp_mode="ddp" if ddp else "fsdp", compile=compile_, flops_convention=convention),
    )
    from llmb.launch import backends

    accelerator = local.accelerator_for(request.device)
    run, name = backends.resolve(request, backend, accelerator=accelerator)
    local.check_local_world(run.world, accelerator)
    if name != backends.ENGINE:
        _run_framework(run, name, accelerator, dry_run, as_json)
        return
    if dry_run:
        print_json(run.config().model_dump(mode="json"))
        return
    exp_dir = create_experiment(run.config())
    if not as_json:
        console.print(f"[bold]llmb run[/] {run.title}, {run.world} rank(s) -> {exp_dir}", highlight=False)
        for note in run.notes:
            console.print(f"  note: {note}", highlight=False)

    def in_process() -> RunSummary:
        from llmb.engine.runner import train

        # With --json, stdout carries only the summary; step lines go to stderr.
        return train(run, exp_dir, progress=console.is_terminal and not as_json,
                     stream=sys.stderr if as_json else None)

    warn = lambda text: err_console.print(f"warning: {text}", highlight=False, soft_wrap=True)  # noqa: E731
    record = tracking.LocalRun.start(run.config(), exp_dir, accelerator, warn)
    try:
        summary = local.run(run, exp_dir, accelerator=accelerator, in_process=in_process, quiet_stdout=as_json)
    except KeyboardInterrupt:
        record.end("interrupted", "interrupted before the summary was written")
        raise
    except BaseException as exc:
        record.end(None, f"{type(exc).__name__}: {exc}" if not str(exc).startswith("error") else str(exc))
        raise
    record.end(summary.status, summary.invalid_reason or summary.failure
               or ("interrupted (Ctrl-C)" if summary.status == "interrupted" else None))
    if as_json:
        print_json(summary.as_dict())
    else:
        console.print(result_table(summary))
        console.print(f"experiment: {summary.experiment_dir}", highlight=False, soft_wrap=True)
        for warning in summary.warnings:
            err_console.print(f"warning: {warning}", highlight=False, soft_wrap=True)
    if summary.status == "interrupted":
        err_console.print(f"interrupted after {summary.steps_completed} step(s); summary written", highlight=False)
        # SystemExit, not typer.Exit: the entry point drops typer.Exit codes in this mode.
        raise SystemExit(130)
    if summary.status == "invalid":
        from llmb.engine.health import RunInvalid

        raise RunInvalid(summary.invalid_reason or "the run is INVALID")
    if summary.status == "failed":
        raise SystemFailure(f"{summary.failure} (summary: {summary.experiment_dir}/summary.json)")


def _run_framework(run, name: str, accelerator: str, dry_run: bool, as_json: bool) -> None:
    """``llmb run --backend NAME``: the framework's own launch of ``run`` on this host."""
    from llmb.launch import backends
    from llmb.launch.backends import local as framework
    from llmb.launch.cluster import load_config

    cluster = load_config()
    settings = cluster.backends.get(name) if cluster is not None else None
    if dry_run:
        launch, argv = framework.prepare(run, name, accelerator, settings)
        out = {"backend": name, "launch": backends.launch_record(launch), "local_command": argv,
               "files": launch.files, "config": run.config().model_copy(update={"backend": name}).model_dump(mode="json")}
        if as_json:
            print_json(out)
            return
        console.print(f"[bold]# llmb run --backend {name}[/]: {run.title}, {run.world} rank(s) "
                      "(dry run: nothing written; EXPERIMENT_DIR is the folder a run creates)", highlight=False)
        for fname, text in launch.files.items():
            if fname.endswith(".py") and name == "torchtitan":
                console.print(f"## {fname}: llmb's torchtitan plugin (llmb/launch/backends/files/llmb_titan.py.txt), "
                              "copied", highlight=False, markup=False)
                continue
            console.print(f"## {fname}", highlight=False, markup=False)
            console.print(text, highlight=False, markup=False, soft_wrap=True)
        console.print("$ " + " ".join(shlex.quote(a) for a in argv), highlight=False, markup=False, soft_wrap=True)
        for note in launch.notes:
            console.print(f"note: {note}", highlight=False, markup=False)
        return
    warn = lambda text: err_console.print(f"warning: {text}", highlight=False, soft_wrap=True)  # noqa: E731
    exp_dir, code, result = framework.run(run, name, accelerator, settings=settings, warn=warn,
                                          echo=sys.stderr if as_json else sys.stdout)
    summary = {"backend": name, "experiment_dir": str(exp_dir), "exit_code": code,
               "result": result.as_dict() if result is not None else None}
    if as_json:
        print_json(summary)
    elif result is not None:
        console.print(framework_table(result, name))
        console.print(f"experiment: {exp_dir}", highlight=False, soft_wrap=True)
    if code != 0:
        raise SystemFailure(f"{name} exited with code {code}; its log: {exp_dir / framework.LOG_NAME}")
    if result is None:
        raise SystemFailure(f"{name} finished but its log has no step lines the {name} parser reads: {exp_dir}")


def framework_table(result, backend: str) -> Table:
    """A framework run's parsed log: its window statistics and, at full size, the metrics."""
    stats, m = result.stats, result.metrics or {}
    table = Table(title=f"llmb run --backend {backend}: {result.spec.label()} ({stats.status.value})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("log format", str(result.parsed.format))
    table.add_row("steps found", str(len(result.parsed.records)))
    table.add_row("window", str(stats.window))
    for key, label in (("step_time_s", "step time (s)"), ("tokens_per_s_per_gpu", "tokens/s per device"),
                       ("tflops_per_gpu", "TFLOP/s per device (logged)"), ("loss", "loss")):
        w = stats.metrics.get(key)
        if w is not None:
            table.add_row(label + " (window mean)", f"{w.mean:.4g}")
    if m:
        table.add_row(f"MFU ({m.get('convention')} FLOPs)", f"{m['mfu'] * 100:.2f} %")
    elif result.spec.proxy:
        table.add_row("metrics", f"none against the catalog: the {result.spec.proxy} proxy is not a catalog model")
    for note in result.notes:
        if result.spec.proxy and note.startswith("no metrics: the "):
            continue  # said above, in the words of a framework run
        table.add_row("note", note)
    return table


@app.command("doctor")
def doctor_cmd(as_json: bool = JSON_OPTION) -> None:
    """Print the environment and measure (and cache) the CPU GEMM ceiling used for MFU."""
    import torch

    from llmb.engine import ceiling
    from llmb.engine.ceiling import cache_file, gemm_ceiling
    from llmb.engine.environment import environment_facts

    facts = environment_facts()
    ceilings = {}
    for dtype in ("fp32", "bf16"):
        t0 = time.perf_counter()
        flops, _ = gemm_ceiling(dtype, refresh=True)
        ceilings[dtype] = {"gflops": flops / 1e9, "measure_s": time.perf_counter() - t0}
    facts["gemm_ceiling_measured"] = ceilings
    facts["gemm_ceiling_cache"] = str(cache_file())
    facts["gemm_ceiling_cache_error"] = ceiling.last_cache_error
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
    if ceiling.last_cache_error:
        table.add_row("NOT cached", ceiling.last_cache_error)
    else:
        table.add_row("cached in", facts["gemm_ceiling_cache"])
    console.print(table)
    console.print("MFU on CPU divides by the measured GEMM ceiling of the run's precision.", highlight=False)
