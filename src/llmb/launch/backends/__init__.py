"""Backends: the frameworks a run can be launched with, one module each.

``llmb`` is llmb's own engine (the default; :mod:`llmb.launch.local` and
:mod:`llmb.launch.submit` start it). The others turn a resolved run into that framework's own
launch (:class:`~llmb.launch.backends.base.FrameworkLaunch`): ``megatron`` (Megatron-LM
``pretrain_gpt.py``), ``nemo2`` (a NeMo 2 recipe), ``nemo1`` (the NeMo Launcher's training
stage), ``maxtext`` (``MaxText/train.py`` with ``base.yml`` keys), ``torchtitan`` (a TOML job
config). ``recipe`` is the framework the workload's published baseline was measured with
(:attr:`llmb.plan.recipe.Recipe.framework`: its baseline's source's, so one workload's
releases may name different frameworks).
"""

from __future__ import annotations

from types import ModuleType

from llmb.errors import LlmbError
from llmb.launch.backends import maxtext, megatron, nemo1, nemo2, torchtitan
from llmb.launch.backends.base import FrameworkLaunch, Target
from llmb.plan.run import ResolvedRun

ENGINE = "llmb"
MODULES: dict[str, ModuleType] = {m.NAME: m for m in (megatron, nemo2, nemo1, maxtext, torchtitan)}
BACKENDS: tuple[str, ...] = (ENGINE, *MODULES)
CHOICES: tuple[str, ...] = (*BACKENDS, "recipe")
#: catalog framework -> backend (Megatron-Bridge drives Megatron-Core like Megatron-LM does).
FRAMEWORK_BACKEND = {"nemo1": "nemo1", "nemo2": "nemo2", "megatron": "megatron", "mbridge": "megatron",
                     "maxtext": "maxtext", "torchtitan": "torchtitan", "llmb": ENGINE}


def backend_name(choice: str | None, framework: str) -> str:
    """The backend ``--backend choice`` means for a workload published with ``framework``."""
    choice = (choice or ENGINE).lower()
    if choice not in CHOICES:
        raise LlmbError(f"unknown backend {choice!r} (choose from {', '.join(CHOICES)})")
    return FRAMEWORK_BACKEND[framework] if choice == "recipe" else choice


def resolve(request, choice: str | None, *, accelerator: str | None, experiments_root=None) -> tuple[ResolvedRun, str]:
    """Resolve ``request`` for backend ``choice``: (the run, the backend's name). llmb's engine
    checks its start checkpoint and data as always; a framework's ``LOAD_CHECKPOINT_PATH`` is
    that framework's own checkpoint, which llmb only requires to exist."""
    from pathlib import Path

    from llmb.plan.run import resolve_run

    probe = resolve_run(request, accelerator=accelerator, experiments_root=experiments_root, check_files=False)
    name = backend_name(choice, probe.recipe.framework)
    if name == ENGINE:
        return resolve_run(request, accelerator=accelerator, experiments_root=experiments_root), name
    load = request.options.load
    if load is not None and not Path(load).expanduser().exists():
        raise LlmbError(f"LOAD_CHECKPOINT_PATH {load} does not exist")
    bare = request.model_copy(update={"options": request.options.model_copy(update={"load": None})})
    run = resolve_run(bare, accelerator=accelerator, experiments_root=experiments_root)
    if load is not None:
        from dataclasses import replace

        full = str(Path(load).expanduser().resolve())
        run = replace(run, request=request, options=run.options.model_copy(update={"load": full}))
    return run, name


def module(name: str) -> ModuleType:
    return MODULES[name]


def unsupported(name: str, run: ResolvedRun) -> str | None:
    """Why backend ``name`` cannot express this run's workload (None: it can)."""
    return None if name == ENGINE else MODULES[name].supports(run)


def render(name: str, run: ResolvedRun, target: Target, settings=None) -> FrameworkLaunch:
    """The framework launch of ``run`` on ``target``; ``settings`` the cluster configuration's
    ``backends.<name>`` (:class:`llmb.launch.cluster.BackendSettings`), if any. Every mistake
    (an impossible pair, a knob the framework cannot honour) is one :class:`LlmbError` line."""
    if name == ENGINE:
        raise ValueError("llmb's engine is launched by llmb.launch.local / llmb.launch.submit")
    mod = MODULES[name]
    if name == "megatron":
        return mod.render(run, target, source=getattr(settings, "source", None))
    if name == "nemo1":
        return mod.render(run, target, tokenizer_model=getattr(settings, "tokenizer_model", None))
    return mod.render(run, target)


#: the frameworks that train on a CPU (llmb's tests run them so); the others need GPUs
CPU_BACKENDS = (ENGINE, "torchtitan")
LAUNCH_FILE = "launch.json"


def check_device(name: str, device: str) -> None:
    """Refuse, before anything is written, a framework that cannot train on ``device``."""
    if device == "cpu" and name not in CPU_BACKENDS:
        raise LlmbError(f"--backend {name}: {name} needs CUDA GPUs (it does not train on a CPU); "
                        "run it on a GPU cluster, or look at the launch with --dry-run")


def launch_record(launch: FrameworkLaunch) -> dict[str, object]:
    """What ``launch.json`` holds: the framework's command exactly as started, and its checks."""
    return {"backend": launch.backend, "log_format": launch.log_format, "launcher": launch.launcher,
            "command": list(launch.command), "wrapper": list(launch.wrapper), "env": launch.env,
            "image": launch.image, "workdir": launch.workdir, "files": sorted(launch.files),
            "checked_against": list(launch.checked_against), "notes": list(launch.notes)}


def write_files(exp_dir, launch: FrameworkLaunch) -> None:
    """The launch's generated files and ``launch.json``, into the experiment folder."""
    import json
    from pathlib import Path

    folder = Path(exp_dir)
    for name, text in launch.files.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / LAUNCH_FILE).write_text(json.dumps(launch_record(launch), indent=2) + "\n", encoding="utf-8")


__all__ = ["resolve", "CPU_BACKENDS", "LAUNCH_FILE", "check_device", "launch_record", "write_files", "BACKENDS", "CHOICES", "ENGINE", "FRAMEWORK_BACKEND", "FrameworkLaunch", "MODULES", "Target",
           "backend_name", "module", "render", "unsupported"]
