"""Cluster set-up and Slurm commands: ``init``, ``cancel``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
import yaml

from llmb.catalog import default_catalog
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
        slurm=settings,
        container=ContainerSettings(image=container_image, mounts=list(container_mount)) if container_image else None,
        env=_parse_env(env),
    )
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
    console.print(f"cancelled {job_id}")


def cluster_config_or_none(path: Optional[Path] = None) -> Optional[ClusterConfig]:
    return load_config(path)
