"""Local launching: run a resolved run on this host, in this process (one rank) or under
``torchrun --standalone`` (several ranks), and pass Ctrl-C on to the workers.

Workers are started by module name (``python -m llmb.engine.worker EXPERIMENT_DIR``); they
execute the run recorded in the folder's ``config.json``. The worker environment
(:func:`worker_env`) is the same policy the Slurm launcher writes into its batch scripts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from llmb.errors import LlmbError, SystemFailure
from llmb.plan.request import RunRequest
from llmb.plan.run import ResolvedRun, resolve_run
from llmb.records import SUMMARY_FILE, RunSummary

WORKER_MODULE = "llmb.engine.worker"
#: Ranks per CPU core a local run may start: multi-rank CPU runs test correctness, not speed,
#: and a few ranks per core still finish; thousands would only exhaust memory.
RANKS_PER_CORE = 4


def host_accelerator() -> str:
    """``"cuda"`` when this host has an NVIDIA driver and GPU device, else ``"cpu"`` (no torch:
    launching stays quick; the engine checks the device itself when it starts)."""
    return "cuda" if gpu_count() > 0 else "cpu"


def accelerator_for(device: str) -> str:
    """What a run asking for ``device`` (``auto``, ``cpu``, ``cuda``) computes on here."""
    return host_accelerator() if device == "auto" else device


def resolve_here(request: RunRequest) -> tuple[ResolvedRun, str]:
    """Resolve ``request`` for this host: the run and the accelerator it will use. Refuses
    what this host cannot run (fp8 without CUDA, more ranks than it holds) before anything
    is written."""
    accelerator = accelerator_for(request.device)
    run = resolve_run(request, accelerator=accelerator)
    check_local_world(run.world, accelerator)
    return run, accelerator


def gpu_count() -> int:
    """NVIDIA GPUs this host exposes (``/dev/nvidia<N>``), 0 without any."""
    try:
        return sum(1 for name in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", name))
    except OSError:
        return 0


def check_local_world(world: int, accelerator: str) -> None:
    """Refuse a local run this host cannot hold: more ranks than GPUs on a GPU host, or more
    than :data:`RANKS_PER_CORE` per core on a CPU."""
    if accelerator == "cuda":
        gpus = gpu_count()
        if world > gpus:
            raise LlmbError(f"the run needs {world} ranks, one per GPU, and this host has {gpus} GPU(s); "
                            "larger runs go through a launcher (llmb submit)")
        return
    cores = os.cpu_count() or 1
    limit = max(8, RANKS_PER_CORE * cores)
    if world > limit:
        raise LlmbError(f"{world} ranks on this host's {cores} CPU core(s): a local CPU run takes at most {limit} "
                        f"({RANKS_PER_CORE} per core); larger runs go through a launcher (llmb submit)")


def worker_env(ranks_per_node: int, max_restarts: int = 0, cores: int | None = None) -> dict[str, str]:
    """Environment defaults of the engine's workers (explicit settings of the user or the
    cluster configuration win over them). ``cores``: the node's CPU cores, when known."""
    env = {
        # Share the cores among the ranks instead of oversubscribing them.
        "OMP_NUM_THREADS": str(max(1, (cores or 1) // max(1, ranks_per_node))),
    }
    if max_restarts:
        # torchrun's shared rendezvous store keeps the first attempt's gloo/NCCL peer addresses,
        # so a restarted group tries to connect to dead ranks (pytorch/pytorch#167288, seen
        # here with gloo): let rank 0 host a fresh store for every attempt instead.
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    return env


def nsys_available(accelerator: str) -> bool:
    return accelerator == "cuda" and shutil.which("nsys") is not None


def nsys_prefix(exp_dir: Path) -> list[str]:
    """The nsys command that wraps torchrun (GPU hosts only). One report per node;
    ``--capture-range=cudaProfilerApi`` limits it to the profiled steps (the workers call
    ``cudaProfilerStart``/``Stop`` at the window's edges)."""
    out = exp_dir / "profiles" / "nsys_%h_%p"
    return [
        "nsys", "profile", "--force-overwrite=true", "--trace=cuda,nvtx,osrt",
        "--capture-range=cudaProfilerApi", "--capture-range-end=stop",
        "--sample=none", "--cpuctxsw=none", "-o", str(out),
    ]


def torchrun_command(nproc: int, exp_dir: Path, max_restarts: int = 0, python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}", "-m", WORKER_MODULE, str(exp_dir)]


def run(
    resolved: ResolvedRun,
    exp_dir: Path,
    *,
    accelerator: str,
    in_process: Callable[[], RunSummary] | None = None,
    quiet_stdout: bool = False,
    environ: Mapping[str, str] | None = None,
) -> RunSummary:
    """Run ``resolved`` (from :func:`resolve_here`, recorded in ``exp_dir``) here. One rank runs ``in_process`` when given
    (no process to start, a progress bar on a terminal); otherwise, or when nsys wraps the
    run, torchrun starts the workers. With ``quiet_stdout`` the workers' output goes to
    stderr (stdout then carries only the caller's JSON)."""
    nsys = resolved.options.profile and nsys_available(accelerator)
    if resolved.world == 1 and in_process is not None and not nsys:
        return in_process()
    env = dict(environ if environ is not None else os.environ)
    for key, value in worker_env(resolved.world, resolved.options.max_restarts, os.cpu_count()).items():
        env.setdefault(key, value)
    cmd = torchrun_command(resolved.world, exp_dir, resolved.options.max_restarts)
    if nsys:
        cmd = nsys_prefix(exp_dir) + cmd
    return _wait_for_workers(cmd, env, exp_dir, quiet_stdout)


def _wait_for_workers(cmd: list[str], env: dict[str, str], exp_dir: Path, quiet_stdout: bool) -> RunSummary:
    # torchrun gets its own session: a Ctrl-C reaches only this process, which passes it on to
    # the workers (they stop after the current step and write the summary). torchrun then
    # sees its workers end normally instead of printing its own signal traceback.
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=sys.stderr if quiet_stdout else None, start_new_session=True)
    except OSError as exc:
        raise SystemFailure(f"cannot start torchrun ({cmd[0]}): {exc.strerror or exc}") from None
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        signal_children(proc.pid, signal.SIGINT)
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: stop now
            proc.terminate()
            code = proc.wait()
    summary_file = exp_dir / SUMMARY_FILE
    if not summary_file.exists():
        if code == 1:
            raise LlmbError(f"the training workers stopped on a configuration error (see above); {exp_dir}")
        raise SystemFailure(f"torchrun exited with code {code} before writing {summary_file}")
    return RunSummary.read(summary_file)


def signal_children(pid: int, sig: int) -> None:
    """Send ``sig`` to the children of process ``pid`` (torchrun's workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # not Linux, or already gone: fall back to torchrun itself
        children = [str(pid)]
    for child in children:
        try:
            os.kill(int(child), sig)
        except ProcessLookupError:
            pass
