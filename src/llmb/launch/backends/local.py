"""Running a framework on this host (``llmb run --backend NAME``): the experiment folder gets
llmb's record (``config.json``), the framework's generated files, ``launch.json`` and
``command.sh`` (the exact command, quoted); the framework's output is copied line by line into
``log.txt``; the run is in the job store from its start, and at its end the log is parsed with
the framework's own parser (the format is known, never guessed) into the store.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from llmb.errors import LlmbError, SystemFailure
from llmb.launch import backends
from llmb.launch.backends.base import FrameworkLaunch, Target
from llmb.launch.experiment import create_experiment
from llmb.plan.run import ResolvedRun

LOG_NAME = "log.txt"
COMMAND_NAME = "command.sh"


def target_here(run: ResolvedRun, exp_dir: Path | str, accelerator: str) -> Target:
    return Target(exp_dir=str(exp_dir), nodes=1, ranks_per_node=run.world, device=accelerator)


def local_argv(launch: FrameworkLaunch, nproc: int, python: str | None = None) -> list[str]:
    """The command that starts ``launch`` on this host with ``nproc`` ranks."""
    if launch.launcher == "torchrun":
        argv = [python or sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                "--max-restarts=0", *launch.command]
    elif launch.launcher == "task":
        if nproc > 1:
            raise LlmbError(f"--backend {launch.backend} starts one process per GPU through srun: "
                            "run it with llmb submit (or on one GPU)")
        argv = list(launch.command)
    else:
        argv = list(launch.command)
    return [*launch.wrapper, *argv]


def command_script(launch: FrameworkLaunch, argv: list[str], workdir: str) -> str:
    """``command.sh``: the environment and command, quoted, to repeat the run by hand."""
    lines = ["#!/bin/bash", f"# Written by llmb: the {launch.backend} launch of this experiment.", "set -euo pipefail",
             f"cd {shlex.quote(workdir)}"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in launch.env.items()]
    lines.append(" ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


#: what each framework needs importable on this host (its own environment: no container here)
_MODULES = {"torchtitan": ("torchtitan",), "nemo2": ("nemo", "nemo_run"), "nemo1": ("nemo",), "megatron": ("megatron.core",)}


def check_here(launch: FrameworkLaunch) -> None:
    """Refuse, in one line and before anything is written, a framework this host lacks: its
    package, Megatron-LM's ``pretrain_gpt.py`` (``backends.megatron.source``), MaxText's folder."""
    import importlib.util

    for module in _MODULES.get(launch.backend, ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package is missing
            found = False
        if not found:
            raise LlmbError(f"--backend {launch.backend}: {module} is not importable here; install {launch.backend} "
                            "in this environment, or submit the run to a cluster with its container (llmb submit)")
    if launch.launcher == "torchrun" and not launch.command[0].startswith("-") and launch.backend == "megatron":
        if not Path(launch.command[0]).is_file():
            raise LlmbError(f"--backend megatron: no {launch.command[0]}: set backends.megatron.source in "
                            "cluster_config.yaml to a Megatron-LM checkout (core_r0.12.0)")
    if launch.backend == "maxtext" and not Path(launch.workdir or "").is_dir():
        raise LlmbError(f"--backend maxtext: no MaxText checkout at {launch.workdir} (MaxText's image has it there)")


def prepare(run: ResolvedRun, name: str, accelerator: str, settings=None) -> tuple[FrameworkLaunch, list[str]]:
    """The launch and its local command, for a folder not yet made (dry runs print these)."""
    launch = backends.render(name, run, target_here(run, "EXPERIMENT_DIR", accelerator), settings)
    return launch, local_argv(launch, run.world)


def run(
    resolved: ResolvedRun,
    name: str,
    accelerator: str,
    *,
    settings=None,
    warn: Callable[[str], None],
    echo=None,
) -> tuple[Path, int, object]:
    """Start framework ``name`` here and wait; returns (experiment folder, exit code, the
    parsed result or None). Everything that can be refused is refused before the folder exists."""
    from llmb.launch import tracking

    backends.check_device(name, accelerator)
    probe = backends.render(name, resolved, target_here(resolved, "/probe", accelerator), settings)
    local_argv(probe, resolved.world)  # refuses what cannot start here
    check_here(probe)
    config = resolved.config().model_copy(update={"backend": name})
    exp_dir = create_experiment(config)
    launch = backends.render(name, resolved, target_here(resolved, exp_dir, accelerator), settings)
    backends.write_files(exp_dir, launch)
    argv = local_argv(launch, resolved.world)
    workdir = launch.workdir if launch.workdir and Path(launch.workdir).is_dir() else str(exp_dir)
    (exp_dir / COMMAND_NAME).write_text(command_script(launch, argv, workdir), encoding="utf-8")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, resolved.world))))
    env.update(launch.env)
    if "PYTHONPATH" in launch.env and os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = launch.env["PYTHONPATH"] + os.pathsep + os.environ["PYTHONPATH"]
    record = tracking.LocalRun.start(config, exp_dir, accelerator, warn, fmt=launch.log_format)
    try:
        code = _stream(argv, env, workdir, exp_dir / LOG_NAME, echo or sys.stderr)
    except KeyboardInterrupt:
        record.end("interrupted", "interrupted (Ctrl-C)")
        raise
    except BaseException as exc:
        record.end(None, f"{type(exc).__name__}: {exc}")
        raise
    reason = None if code == 0 else f"{name} exited with code {code} (see {exp_dir / LOG_NAME})"
    result = record.end("complete" if code == 0 else "failed", reason)
    return exp_dir, code, result


def _stream(argv: list[str], env: dict[str, str], cwd: str, log: Path, echo) -> int:
    """Run ``argv``, copying its output (stdout and stderr) to ``log`` and ``echo``."""
    try:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as exc:
        raise SystemFailure(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    assert proc.stdout is not None
    with log.open("wb") as fh:
        try:
            for line in proc.stdout:
                fh.write(line)
                fh.flush()
                echo.write(line.decode("utf-8", "replace"))
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait()
            raise
    return proc.wait()
