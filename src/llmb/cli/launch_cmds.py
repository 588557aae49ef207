"""Cluster set-up and Slurm commands: ``init``, ``cancel``."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional

import typer
import yaml
from pydantic import ValidationError

from llmb.catalog import default_catalog
from llmb.datafile import format_validation_error
from llmb.cli.app import JSON_OPTION, app, console, print_json
from llmb.errors import LlmbError
from llmb.launch import slurm
from llmb.launch.cluster import (
    ClusterConfig,
    ContainerSettings,
    SlurmSettings,
    config_path,
    load_config,
    read_secret_names,
    save_config,
    save_secrets,
    secrets_path,
)
from llmb.paths import install_dir


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LlmbError(f"--env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


@app.command()
def init(
    install_path: Optional[Path] = typer.Option(None, help="Top-level folder for llmb files (default: $LLMB_INSTALL or ~/.llmb)."),
    experiments_path: Optional[Path] = typer.Option(None, help="Where experiment folders go (default: INSTALL/experiments)."),
    gpu_type: Optional[str] = typer.Option(None, help="GPU type of the nodes (h100, gb200, ...)."),
    gpus_per_node: Optional[int] = typer.Option(None, min=1, help="GPUs (ranks) per node."),
    launcher: Optional[str] = typer.Option(None, help="slurm or local (default: slurm when sinfo answers)."),
    accelerator: Optional[str] = typer.Option(None, help="gpu or cpu (default: gpu when nvidia-smi is on PATH)."),
    account: Optional[str] = typer.Option(None, help="Slurm account."),
    partition: Optional[str] = typer.Option(None, help="Slurm partition."),
    qos: Optional[str] = typer.Option(None, help="Slurm QoS."),
    reservation: Optional[str] = typer.Option(None, help="Slurm reservation."),
    time_limit: str = typer.Option("01:00:00", help="sbatch --time."),
    gres: bool = typer.Option(False, "--gres/--no-gres", help="Pass --gpus-per-node to sbatch (GRES clusters)."),
    sbatch_arg: List[str] = typer.Option([], "--sbatch-arg", help="Extra sbatch argument (repeatable)."),
    container_image: Optional[str] = typer.Option(None, help="Pyxis/enroot container image."),
    container_mount: List[str] = typer.Option([], "--container-mount", help="Container mount SRC:DST (repeatable)."),
    env: List[str] = typer.Option([], "--env", help="KEY=VALUE set in every job (repeatable)."),
    secret: List[str] = typer.Option([], "--secret", help="Name of a secret (e.g. HF_TOKEN) read from the environment or asked for; stored 0600, never printed."),
    config: Optional[Path] = typer.Option(None, "--config", help="Where to write the configuration."),
    yes: bool = typer.Option(False, "--yes", "-y", "--non-interactive", help="Ask nothing; use flags and defaults."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write cluster_config.yaml (interactively, or from flags with -y)."""
    interactive = not yes and sys.stdin.isatty()
    found_slurm = slurm.slurm_available()
    parts = slurm.partitions() if found_slurm else []

    def ask(label: str, value, default):
        if value is not None:
            return value
        if interactive:
            return typer.prompt(label, default=default if default is not None else "", show_default=True) or None
        return default

    root = Path(ask("Install path", install_path, str(install_dir()))).expanduser()
    experiments = Path(ask("Experiments path", experiments_path, str(root / "experiments"))).expanduser()
    gpu = ask("GPU type", gpu_type, "h100")
    default_catalog().gpu_key(gpu)  # a clear error for an unknown GPU type
    per_node = int(ask("GPUs per node", gpus_per_node, 8))
    if per_node <= 0:
        raise LlmbError(f"GPUs per node must be positive, got {per_node}")
    mode = ask("Launcher (slurm/local)", launcher, "slurm" if found_slurm else "local")
    if mode not in ("slurm", "local"):
        raise LlmbError(f"launcher must be slurm or local, got {mode!r}")
    kind = ask("Accelerator (gpu/cpu)", accelerator, "gpu" if shutil.which("nvidia-smi") else "cpu")
    if kind not in ("gpu", "cpu"):
        raise LlmbError(f"accelerator must be gpu or cpu, got {kind!r}")
    if container_mount and not container_image:
        raise LlmbError("--container-mount goes with --container-image")
    try:
        settings = SlurmSettings(
            account=ask("Slurm account", account, None) if mode == "slurm" else account,
            partition=ask("Slurm partition", partition, parts[0] if parts else None) if mode == "slurm" else partition,
            qos=qos,
            reservation=reservation,
            time_limit=time_limit,
            gpus_per_node_flag=gres,
            extra_args=list(sbatch_arg),
        )
        cfg = ClusterConfig(
            install_path=str(root),
            experiments_path=str(experiments),
            gpu_type=gpu,
            gpus_per_node=per_node,
            launcher=mode,
            accelerator=kind,
            slurm=settings,
            container=ContainerSettings(image=container_image, mounts=list(container_mount)) if container_image else None,
            env=_parse_env(env),
        )
    except ValidationError as exc:
        raise LlmbError(format_validation_error("cluster configuration", exc)) from None
    values = {}
    for name in secret:
        value = os.environ.get(name)
        if value is None:
            if not interactive:
                raise LlmbError(f"secret {name} is not set in the environment (export it, or run init interactively)")
            value = typer.prompt(f"{name}", hide_input=True)
        values[name] = value
    target = config or (config_path() if os.environ.get("LLMB_CLUSTER_CONFIG") else root / "cluster_config.yaml")
    path = save_config(cfg, target)

    if values:
        save_secrets(values, path)
    names = read_secret_names(secrets_path(path))

    if as_json:
        print_json({"config": str(path), "slurm_detected": found_slurm, "secrets": names, **cfg.model_dump(mode="json")})
        return
    console.print(f"Wrote {path}" + (" (Slurm detected: partitions " + ", ".join(parts) + ")" if found_slurm else ""))
    console.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip(), highlight=False, markup=False)
    if names:
        console.print(f"secrets ({secrets_path(path)}, mode 0600): {', '.join(names)}")


@app.command()
def cancel(job_id: str = typer.Argument(..., help="Slurm job id.")) -> None:
    """Cancel a Slurm job."""
    if not job_id.isdigit():
        raise LlmbError(f"a Slurm job id is a number, got {job_id!r}")
    slurm.cancel(job_id)
    from llmb.results.store import Store

    store = Store.open()
    run = store.find_job(job_id)
    if run is not None:
        store.set_state(run["run_id"], "CANCELLED", "cancelled with llmb cancel")
    console.print(f"cancelled {job_id}" + (f" ({run['run_id']})" if run else ""), highlight=False)


@app.command()
def submit(
    workload: Optional[str] = typer.Argument(None, help="Workload (or use -f runs.yaml)."),
    size: Optional[str] = typer.Option(None, "--size", "-s", help="Model size [env MODEL_SIZE]."),
    dtype: Optional[str] = typer.Option(None, "--dtype", "-d", help="bf16, fp8 or fp32 [env DTYPE]."),
    scale: List[int] = typer.Option([], "--scale", "-n", help="Total GPUs (repeatable) [env JOB_TOTAL_GPUS]."),
    min_scale: Optional[int] = typer.Option(None, "--min-scale", help="Run the catalog's published scales from here."),
    max_scale: Optional[int] = typer.Option(None, "--max-scale", help="... up to here."),
    exact_scales: Optional[str] = typer.Option(None, "--exact-scales", help="Comma-separated scales, e.g. 8,16,32."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Jobs per configuration."),
    gpu_type: Optional[str] = typer.Option(None, "--gpu-type", help="GPU type [env GPU_TYPE]."),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node", min=1, help="Ranks per node [env GPUS_PER_NODE]."),
    proxy: Optional[str] = typer.Option(None, "--proxy", help="CPU proxy name, or 'none' for full size (default: the cluster's accelerator decides)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Training steps [env MAX_STEPS]."),
    tp: Optional[int] = typer.Option(None, "--tp"), pp: Optional[int] = typer.Option(None, "--pp"),
    cp: Optional[int] = typer.Option(None, "--cp"), ep: Optional[int] = typer.Option(None, "--ep"),
    etp: Optional[int] = typer.Option(None, "--etp"), vp: Optional[int] = typer.Option(None, "--vp"),
    mbs: Optional[int] = typer.Option(None, "--mbs"), gbs: Optional[int] = typer.Option(None, "--gbs"),
    profile: bool = typer.Option(False, "--profile", help="Profile the recipe's step range [env ENABLE_PROFILE]."),
    max_restarts: int = typer.Option(0, "--max-restarts", min=0, help="torchrun elastic restarts per node."),
    spec_file: Optional[Path] = typer.Option(None, "--file", "-f", help="Bulk spec (runs.yaml)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Cluster configuration file."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the scripts and sbatch commands; submit nothing."),
    backend: str = typer.Option("llmb", "--backend", help="llmb (this engine), megatron, nemo2, nemo1, maxtext, torchtitan, or recipe (the framework of the workload's baseline)."),
    container: bool = typer.Option(True, "--container/--no-container", help="Run a framework in its container image (Pyxis), or in the nodes' own environment."),
    data: Optional[str] = typer.Option(None, "--data", help="Indexed dataset PREFIX (.bin/.idx) for the frameworks that read it (default: mock data)."),
    release: Optional[str] = typer.Option(None, "--release", help="Recipe release whose layout and baseline to follow (default: the newest)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Submit benchmark jobs to Slurm (one, a scale sweep, or a bulk spec)."""
    from llmb.launch import bulk
    from llmb.launch import submit as sub
    from llmb.results.store import Store

    catalog = default_catalog()
    cluster = load_config(config) or sub.default_cluster()
    cli = dict(size=size, dtype=dtype, gpu_type=gpu_type, gpus_per_node=gpus_per_node, max_steps=steps,
               profile=profile or None, tp=tp, pp=pp, cp=cp, ep=ep, etp=etp, vp=vp, mbs=mbs, gbs=gbs,
               gpus=scale[0] if len(scale) == 1 else None)
    knobs = sub.knobs_for(cli, cluster)
    if spec_file is not None:
        if workload is not None:
            raise LlmbError("give a workload or -f runs.yaml, not both")
        planned = bulk.expand(bulk.load_bulk(spec_file), catalog)
    else:
        if workload is None:
            raise LlmbError("name a workload (e.g. llmb submit llama3.1 --size 8b --scale 8) or give -f runs.yaml")
        wl = catalog.workload(workload)
        size_key = catalog.size(wl, knobs["size"])[0] if knobs.get("size") else next(iter(wl.sizes))
        d = knobs.get("dtype") or wl.default_dtype
        exact = []
        if exact_scales:
            parts = [x.strip() for x in exact_scales.split(",")]
            if not all(x.isdigit() and int(x) > 0 for x in parts):
                raise LlmbError(f"--exact-scales takes positive whole numbers separated by commas, got {exact_scales!r}")
            exact = [int(x) for x in parts]
        if scale:
            scales = list(scale)
        elif exact or min_scale or max_scale:
            scales = bulk.discover_scales(catalog, wl.name, size_key, d, knobs.get("gpu_type"), min_scale, max_scale, exact)
        elif knobs.get("gpus"):
            scales = [knobs["gpus"]]
        else:
            raise LlmbError("give --scale N (or JOB_TOTAL_GPUS), --exact-scales, or --min-scale/--max-scale")
        planned = sub.planned_from(catalog, wl.name, size_key, d, scales, repeats, knobs.get("gpu_type"), proxy, {})

    prepared = [sub.prepare(p, cluster, knobs, os.environ, max_restarts=max_restarts, backend=backend,
                            container=container, data=data, release=release) for p in planned]
    if dry_run:
        out = [{"title": p.title, "backend": p.backend, "experiment_dir": str(p.experiment_dir), "script": p.script,
                "files": p.launch.files if p.launch is not None else {}, "sbatch": sbatch_argv(p)} for p in prepared]
        if as_json:
            print_json(out)
            return
        for o in out:
            console.print(f"[bold]# {o['title']}[/]  (dry run: nothing written or submitted)", highlight=False)
            console.print(o["script"], highlight=False, markup=False, soft_wrap=True)
            for fname, text in o["files"].items():
                if fname.endswith(".py") and o["backend"] == "torchtitan":
                    console.print(f"## {fname}: llmb's torchtitan plugin, copied", highlight=False, markup=False)
                    continue
                console.print(f"## {fname} (written beside the script)", highlight=False, markup=False)
                console.print(text, highlight=False, markup=False, soft_wrap=True)
            console.print("$ " + " ".join(o["sbatch"]) + "\n", highlight=False, markup=False)
        return

    store = Store.open()
    done = []
    for p in prepared:
        p, job_id, run_id = sub.submit(p, store, cluster_name=cluster.slurm.partition)
        done.append({"job_id": job_id, "run_id": run_id, "title": p.title, "experiment_dir": str(p.experiment_dir)})
        if not as_json:
            console.print(f"submitted job {job_id}: {p.title} -> {p.experiment_dir}", highlight=False)
    if as_json:
        print_json(done)


def sbatch_argv(prepared) -> list[str]:
    from llmb.launch.sbatch import sbatch_command

    return sbatch_command(prepared.experiment_dir / "launch.sbatch")
