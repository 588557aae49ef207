"""What every backend shares: the launch a backend renders, where it runs, and the checks that
turn a workload, layout or knob a framework cannot express into one line before anything is
written.

A backend is a pure function of a resolved run (:class:`~llmb.plan.run.ResolvedRun`) and a
:class:`Target` (nodes, ranks per node, the experiment folder as the framework sees it): it
returns a :class:`FrameworkLaunch` (the framework's own command line and the config files it
reads). Nothing here touches the disk or starts a process; :mod:`llmb.launch.backends.run`
(local) and :mod:`llmb.launch.submit` (Slurm) do.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Literal

from llmb.errors import LlmbError
from llmb.plan.run import ResolvedRun

#: Steps an NCCL trace covers (the recipes' ENABLE_NCCLTRACE: "limited to the first 5 steps").
NCCL_TRACE_STEPS = 5
NCCL_TRACE_ENV = {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,COLL,P2P"}

#: RunOptions only llmb's own engine implements: another backend refuses them when set.
ENGINE_ONLY_OPTIONS = {
    "save_every": "--save-every", "async_save": "--async-save", "keep_last": "--keep-last",
    "init_from": "--init-from", "resume": "--resume", "max_restarts": "--max-restarts",
    "memory_snapshot": "--memory-snapshot", "profile_ranks": "--profile-ranks",
}


@dataclass(frozen=True)
class Target:
    """Where the framework runs: ``exp_dir`` is the experiment folder's path as the framework
    sees it (the same path inside a container: llmb mounts it there)."""

    exp_dir: str
    nodes: int = 1
    ranks_per_node: int = 1
    device: Literal["cpu", "cuda"] = "cuda"

    @property
    def world(self) -> int:
        return self.nodes * self.ranks_per_node


@dataclass(frozen=True)
class FrameworkLaunch:
    """One framework launch, in the framework's own words.

    ``launcher`` says how each node starts it: ``torchrun`` (``command`` is what follows
    torchrun's own options: a script or ``-m module`` and its arguments), ``node`` (one process
    per node runs ``command`` as is, e.g. JAX's MaxText, which drives all GPUs of its node) or
    ``task`` (one process per GPU, started by srun, which reads Slurm's task variables: NeMo 1). ``files`` are written into the experiment folder before the launch (name -> text)."""

    backend: str
    log_format: str  # the llmb.results parser that reads its log
    launcher: Literal["torchrun", "node", "task"]
    command: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    image: str | None = None  # the published recipe's container (None: none published)
    workdir: str | None = None  # where the command runs (inside the container)
    #: a profiler wrapped around the per-node process (nsys), empty when not profiling
    wrapper: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    #: the framework's source this launch was checked against (repository, file, version)
    checked_against: tuple[str, ...] = ()

    def shell(self) -> str:
        """The command, quoted for a POSIX shell (what a human would paste)."""
        return " ".join(shlex.quote(a) for a in self.command)


def refuse(backend: str, what: str) -> LlmbError:
    return LlmbError(f"--backend {backend}: {what}")


def check_options(run: ResolvedRun, backend: str, honoured: set[str] = frozenset()) -> None:
    """Refuse, in one line, an engine-only option (or one this backend does not honour)."""
    opts, req = run.options, run.request
    if req.compile:
        raise refuse(backend, "--compile is an option of llmb's own engine; set the framework's own compile setting")
    if req.dp_mode != "fsdp":
        raise refuse(backend, f"--ddp is an option of llmb's own engine; {backend} follows the recipe's layout")
    for name, flag in ENGINE_ONLY_OPTIONS.items():
        value = getattr(opts, name)
        if name in honoured or value in (None, False, 0):
            continue
        raise refuse(backend, f"{flag} is an option of llmb's own engine; {backend} cannot honour it")
    if opts.profile and opts.nccl_trace:
        raise refuse(backend, "ENABLE_PROFILE and ENABLE_NCCLTRACE are mutually exclusive in the recipes; give one")


def check_data(run: ResolvedRun, backend: str, indexed_ok: bool) -> str | None:
    """The Megatron-style indexed dataset prefix a backend reads (None: mock data)."""
    data = run.request.data
    if data is None:
        return None
    if data == "sample":
        raise refuse(backend, "--data sample is llmb's shipped text; give an indexed dataset PREFIX (.bin/.idx)")
    if not indexed_ok:
        raise refuse(backend, f"{backend} does not read Megatron indexed datasets (--data {data}); run on mock data")
    return data


def steps_of(run: ResolvedRun) -> int:
    """Training steps: the run's, or the NCCL trace's first steps."""
    return min(run.steps, NCCL_TRACE_STEPS) if run.options.nccl_trace else run.steps


def trace_env(run: ResolvedRun) -> dict[str, str]:
    return dict(NCCL_TRACE_ENV) if run.options.nccl_trace else {}


def attention_env(run: ResolvedRun) -> dict[str, str]:
    """Transformer Engine's attention backend where the recipe selects the flash-attn package
    over cuDNN's fused attention (the NeMo 1 launcher's Grok-1 and Nemotron-4 340B scripts
    export NVTE_FUSED_ATTN=0); nothing where it keeps the default."""
    return {"NVTE_FUSED_ATTN": "0"} if run.recipe.attention_backend == "flash" else {}


def start_checkpoint(run: ResolvedRun) -> str | None:
    """LOAD_CHECKPOINT_PATH as given (the framework's own checkpoint; llmb does not read it)."""
    return run.options.load


def nsys_prefix(exp_dir: str, capture: str = "cudaProfilerApi") -> list[str]:
    """Nsight Systems around the framework's process (``capture``: which start/stop it obeys)."""
    return ["nsys", "profile", "--force-overwrite=true", "--trace=cuda,nvtx,osrt",
            f"--capture-range={capture}", "--capture-range-end=stop", "--sample=none", "--cpuctxsw=none",
            "-o", f"{exp_dir}/profiles/nsys_%h_%p"]


def admit(run: ResolvedRun, backend: str, reason: str | None) -> None:
    """Refuse the run in one line when the backend's ``supports`` gave a reason."""
    if reason:
        raise refuse(backend, f"cannot express {run.recipe.workload.name}: {reason}")


def no_moe(run: ResolvedRun, backend: str, why: str) -> None:
    if run.model.moe is not None:
        raise refuse(backend, f"{run.recipe.workload.name} is a mixture-of-experts model: {why}")


#: what the catalog's Grok-1 has that neither NeMo version expresses (nor do its published recipes set it)
REFERENCE_EXTRAS = ("attn_logit_softcap", "embedding_multiplier", "output_multiplier", "sandwich_norm")


def extras_note(run: ResolvedRun, backend: str) -> tuple[str, ...]:
    """Grok-1's soft cap, multipliers and post-norms: said, since the framework trains without them."""
    m = run.model
    missing = [f for f in REFERENCE_EXTRAS if getattr(m, f) is not None and getattr(m, f) is not False]
    if not missing:
        return ()
    return (f"{backend} has no setting for {', '.join(missing)} and the published recipe sets none of them: this "
            f"launch trains the benchmark's model (a Mixtral-style GPT of {run.recipe.workload.name}'s sizes), "
            "not the reference architecture llmb's engine trains",)


__all__ = ["ENGINE_ONLY_OPTIONS", "FrameworkLaunch", "NCCL_TRACE_STEPS", "Target", "admit", "check_data", "check_options", "extras_note",
           "no_moe", "nsys_prefix", "refuse", "start_checkpoint", "steps_of", "trace_env"]
