"""Slurm batch scripts: render a readable one, submit it, and nothing reaches a shell unquoted.

Launch model: one Slurm task per node, each running ``torchrun`` with a c10d rendezvous hosted
on the first node (``--rdzv-id`` = the job id), so torchrun's elastic agent can restart failed
workers (``--max-restarts``) and every node needs the same command line. The first node's
address comes from ``scontrol show node`` (``NodeAddr``), which also works where node names do
not resolve (the local test cluster).

Quoting: every value that reaches the shell goes through :func:`shlex.quote`; values that land
in ``#SBATCH`` lines (parsed by sbatch, not a shell) must match a conservative character set
or are refused, and job names are sanitized.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from llmb import __version__
from llmb.errors import LlmbError, SystemFailure

_DIRECTIVE_SAFE = re.compile(r"^[A-Za-z0-9_.:,=@%/+\-]+$")
_EXTRA_ARG = re.compile(r"^--?[A-Za-z][A-Za-z0-9-]*(=[A-Za-z0-9_.:,=@%/+\-]*)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SlurmJob:
    """Everything an sbatch script needs. ``command`` is the argv torchrun runs on each node
    (after its own options), e.g. ``["-m", "llmb.engine.worker", "--config", "run.json"]``."""

    name: str
    nodes: int
    ranks_per_node: int
    experiment_dir: Path
    command: list[str]
    python: str
    title: str = ""
    env: dict[str, str] = field(default_factory=dict)
    account: str | None = None
    partition: str | None = None
    qos: str | None = None
    reservation: str | None = None
    time_limit: str | None = None
    gpus_per_node: int | None = None  # --gpus-per-node, for clusters configured with GRES
    extra_args: list[str] = field(default_factory=list)
    container_image: str | None = None
    container_mounts: list[str] = field(default_factory=list)
    secrets_file: Path | None = None
    max_restarts: int = 0
    rdzv_base_port: int = 29500
    #: how each node starts ``command``: ``torchrun`` (llmb's engine, Megatron-LM, NeMo 2,
    #: torchtitan), ``node`` (one process per node runs it as is: MaxText) or ``task`` (one
    #: process per rank, started by srun: NeMo 1)
    launcher: str = "torchrun"
    wrapper: list[str] = field(default_factory=list)  # a profiler around the per-node process (nsys)
    workdir: str | None = None  # where the command runs (the container's working directory)
    #: the framework's log: every task's output is appended to it (None: llmb's engine writes its own)
    log_file: Path | None = None


def job_name(text: str) -> str:
    """A Slurm job name from free text: safe characters only, at most 64."""
    cleaned = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9_.\-]+", "-", text)).strip("-.")
    return (cleaned or "llmb")[:64]


def _directive(flag: str, value: object) -> str:
    text = str(value)
    if not _DIRECTIVE_SAFE.match(text):
        raise LlmbError(
            f"sbatch {flag} value {text!r} has characters llmb will not put in a batch script "
            "(allowed: letters, digits and _.:,=@%/+-)"
        )
    return f"#SBATCH {flag}={text}"


def render(job: SlurmJob, now: datetime | None = None) -> str:
    """The batch script text for ``job``."""
    if job.nodes <= 0 or job.ranks_per_node <= 0:
        raise LlmbError(f"a Slurm job needs nodes and ranks per node > 0 (got {job.nodes}, {job.ranks_per_node})")
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out_dir = str(job.experiment_dir)
    lines = [
        "#!/bin/bash",
        _directive("--job-name", job_name(job.name)),
        _directive("--nodes", job.nodes),
        "#SBATCH --ntasks-per-node=1",
        _directive("--output", f"{out_dir}/slurm-%j.out"),
        _directive("--chdir", out_dir),
    ]
    for flag, value in (
        ("--account", job.account),
        ("--partition", job.partition),
        ("--qos", job.qos),
        ("--reservation", job.reservation),
        ("--time", job.time_limit),
        ("--gpus-per-node", job.gpus_per_node),
    ):
        if value:
            lines.append(_directive(flag, value))
    for arg in job.extra_args:
        if not _EXTRA_ARG.match(arg):
            raise LlmbError(f"extra sbatch argument {arg!r} is not of the form --name or --name=value")
        lines.append(f"#SBATCH {arg}")

    title = job.title.replace("\n", " ")
    lines += [
        "",
        f"# Written by llmb {__version__} at {stamp}" + (f": {title}" if title else ""),
        f"# {job.nodes} node(s) x {job.ranks_per_node} rank(s); " + {
            "torchrun": "torchrun per node, c10d rendezvous on the first node.",
            "node": "one process per node drives its GPUs; jax.distributed joins the nodes.",
            "task": "one srun task per rank.",
        }.get(job.launcher, job.launcher),
        "set -euo pipefail",
        "",
    ]
    for key, value in job.env.items():
        if not _ENV_NAME.match(key):
            raise LlmbError(f"{key!r} is not a valid environment variable name")
        lines.append(f"export {key}={shlex.quote(value)}")
    if job.secrets_file is not None:
        secrets = shlex.quote(str(job.secrets_file))
        lines.append(f"if [ -r {secrets} ]; then set -a; . {secrets}; set +a; fi  # values never printed")
    if job.env or job.secrets_file is not None:
        lines.append("")
    lines += [
        # sed reads the whole list: head would leave scontrol writing into a closed pipe on a
        # long node list (SIGPIPE), which pipefail turns into the job's failure
        'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
        "head_addr=$(scontrol show node \"$head_node\" | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p')",
        'head_addr=${head_addr:-$head_node}',
        f"rdzv_port=$(( {job.rdzv_base_port} + SLURM_JOB_ID % 1000 ))",
        'echo "llmb: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, rendezvous at $head_addr:$rdzv_port"',
        "",
    ]
    if job.launcher not in ("torchrun", "node", "task"):
        raise ValueError(f"unknown launcher {job.launcher!r}")
    tasks = job.ranks_per_node if job.launcher == "task" else 1
    srun = ["srun", f"--nodes={job.nodes}", f"--ntasks-per-node={tasks}", "--kill-on-bad-exit=1"]
    if job.container_image:
        srun.append("--container-image=" + job.container_image)
        if job.container_mounts:
            srun.append("--container-mounts=" + ",".join(job.container_mounts))
        if job.workdir:
            srun.append("--container-workdir=" + job.workdir)
    elif job.workdir:
        srun.append("--chdir=" + job.workdir)
    q = lambda args: " ".join(shlex.quote(a) for a in args)  # noqa: E731
    tee = f" 2>&1 | tee -a {shlex.quote(str(job.log_file))}" if job.log_file is not None else ""
    if job.launcher != "torchrun":
        groups = [q(srun)]
        if job.launcher == "node":
            # One process per node (MaxText): it joins the others through jax.distributed, which
            # MaxText's hardware=gpu starts from these variables (max_utils.initialize_jax_for_gpu
            # @ 0fe43b75a285: coordinator JAX_COORDINATOR_IP:JAX_COORDINATOR_PORT, NNODES
            # processes, this one NODE_RANK); each task's rank is its node's index.
            lines += ['export JAX_COORDINATOR_IP="$head_addr" JAX_COORDINATOR_PORT="$rdzv_port" '
                      'NNODES="$SLURM_JOB_NUM_NODES"', ""]
            groups.append(q(["bash", "-c", 'NODE_RANK="$SLURM_NODEID" exec "$@"', "node-rank"]))
        groups += ([q(job.wrapper)] if job.wrapper else []) + [q(job.command)]
        lines.append(" \\\n    ".join(groups) + tee)
        return "\n".join(lines) + "\n"
    torchrun = [
        job.python, "-m", "torch.distributed.run",
        f"--nnodes={job.nodes}",
        f"--nproc-per-node={job.ranks_per_node}",
        f"--max-restarts={job.max_restarts}",
        "--rdzv-backend=c10d",
        "--rdzv-id=$SLURM_JOB_ID",
        "--rdzv-endpoint=$head_addr:$rdzv_port",
    ]
    # Rendezvous arguments expand shell variables on purpose, so they are double-quoted.
    groups = [
        q(srun),
        *([q(job.wrapper)] if job.wrapper else []),
        q(torchrun[:3]),
        q(torchrun[3:6]),
        q(torchrun[6:7]) + ' "--rdzv-id=$SLURM_JOB_ID" "--rdzv-endpoint=$head_addr:$rdzv_port"',
        q(job.command),
    ]
    lines.append(" \\\n    ".join(groups) + tee)
    return "\n".join(lines) + "\n"


def sbatch_command(script: Path) -> list[str]:
    return ["sbatch", "--parsable", str(script)]


def submit(script: Path, timeout_s: float = 60.0) -> str:
    """Submit with ``sbatch --parsable``; returns the job id."""
    try:
        proc = subprocess.run(sbatch_command(script), capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise LlmbError("sbatch is not on PATH: is this a Slurm login node? (use --dry-run to only write the script)") from None
    except subprocess.TimeoutExpired:
        raise SystemFailure(f"sbatch did not answer within {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        raise LlmbError(f"sbatch refused the job: {reason[-1] if reason else f'exit code {proc.returncode}'}")
    job_id = proc.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise SystemFailure(f"sbatch printed no job id: {proc.stdout.strip()!r}")
    return job_id
