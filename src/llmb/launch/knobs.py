"""The reference recipes' knobs, read from the environment, and how they combine.

The recipes' ``launch.sh`` scripts are driven by environment variables (``DTYPE=fp8
MODEL_SIZE=70b JOB_TOTAL_GPUS=256 GPUS_PER_NODE=8 ./launch.sh``). llmb accepts the same names.
Precedence, highest first: command-line option > environment variable > cluster configuration >
the recipe's own value. :func:`resolve_knobs` applies it; every bad value is one readable line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from llmb.errors import LlmbError
from llmb.plan.layout import LAYOUT_KNOBS
from llmb.plan.options import RunOptions, parse_ranks
from llmb.plan.request import DEFAULT_WORKLOAD, RunRequest

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n", ""}


@dataclass(frozen=True)
class Knob:
    env: str
    field: str
    kind: type
    help: str


KNOBS: tuple[Knob, ...] = (
    Knob("DTYPE", "dtype", str, "precision: bf16, fp8 or fp32"),
    Knob("MODEL_SIZE", "size", str, "model size, e.g. 8b"),
    Knob("JOB_TOTAL_GPUS", "gpus", int, "total GPUs (ranks) of the job"),
    Knob("GPUS_PER_NODE", "gpus_per_node", int, "GPUs (ranks) per node"),
    Knob("GPU_TYPE", "gpu_type", str, "GPU type, e.g. h100, gb200"),
    Knob("MAX_STEPS", "max_steps", int, "training steps"),
    Knob("ENABLE_PROFILE", "profile", bool, "profile steps PROFILE_START_STEP..PROFILE_STOP_STEP"),
    Knob("PROFILE_START_STEP", "profile_start_step", int, "first profiled step"),
    Knob("PROFILE_STOP_STEP", "profile_stop_step", int, "last profiled step"),
    Knob("ENABLE_NCCLTRACE", "nccl_trace", bool, "NCCL debug trace of the first steps"),
    Knob("ENABLE_CHECKPOINT", "checkpoint", bool, "save a checkpoint at the end"),
    Knob("LOAD_CHECKPOINT_PATH", "load_checkpoint", str, "resume from this checkpoint"),
    Knob("SBATCH_ACCOUNT", "account", str, "Slurm account"),
    Knob("SBATCH_PARTITION", "partition", str, "Slurm partition"),
    Knob("SBATCH_GPUS_PER_NODE", "sbatch_gpus_per_node", int, "Slurm --gpus-per-node"),
    Knob("TP", "tp", int, "tensor-parallel size"),
    Knob("PP", "pp", int, "pipeline-parallel size"),
    Knob("CP", "cp", int, "context-parallel size"),
    Knob("EP", "ep", int, "expert-parallel size"),
    Knob("ETP", "etp", int, "expert tensor-parallel size"),
    Knob("VP", "vp", int, "virtual pipeline chunks"),
    Knob("MBS", "mbs", int, "micro-batch size"),
    Knob("GBS", "gbs", int, "global batch size"),
)
BY_FIELD = {k.field: k for k in KNOBS}
#: The layout knobs the recipes set by environment variable (FSDP, MaxText's, has none).
LAYOUT_ENV_KNOBS = tuple(k for k in LAYOUT_KNOBS if k in BY_FIELD)


def parse_value(knob: Knob, raw: str) -> Any:
    """Turn an environment string into the knob's type; a bad value is one line."""
    text = raw.strip()
    if knob.kind is bool:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise LlmbError(f"{knob.env} must be true or false, got {raw!r}")
    if knob.kind is int:
        try:
            value = int(text)
        except ValueError:
            raise LlmbError(f"{knob.env} must be a positive whole number, got {raw!r}") from None
        if value <= 0:
            raise LlmbError(f"{knob.env} must be a positive whole number, got {raw!r}")
        return value
    if knob.field == "dtype":
        return text.lower()
    return text


def knobs_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The knobs set in ``environ``, by field name (unset and empty string variables are skipped,
    except booleans, where an empty value means false)."""
    found: dict[str, Any] = {}
    for knob in KNOBS:
        raw = environ.get(knob.env)
        if raw is None or (raw == "" and knob.kind is not bool):
            continue
        found[knob.field] = parse_value(knob, raw)
    return found


def resolve_knobs(
    cli: Mapping[str, Any],
    environ: Mapping[str, str],
    cluster: Mapping[str, Any] | None = None,
    recipe: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge the four sources; returns the values and, for each, where it came from."""
    layers = (
        ("recipe", dict(recipe or {})),
        ("cluster config", dict(cluster or {})),
        ("environment", knobs_from_env(environ)),
        ("command line", {k: v for k, v in cli.items() if v is not None}),
    )
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, layer in layers:
        for key, value in layer.items():
            if value is None:
                continue
            values[key] = value
            origin[key] = name
    return values, origin


def run_options(cli: Mapping[str, Any], environ: Mapping[str, str]) -> RunOptions:
    """Checkpoint, profiling and health options: the command line over the recipes' variables
    (ENABLE_CHECKPOINT, LOAD_CHECKPOINT_PATH, ENABLE_PROFILE, PROFILE_START_STEP,
    PROFILE_STOP_STEP, ENABLE_NCCLTRACE). ``cli`` holds :class:`RunOptions` field names; a
    ``profile_ranks`` string is parsed (``"0,1"``, ``"all"``)."""
    cli = {k: v for k, v in cli.items() if v is not None}
    env_names = {"save_at_end": "checkpoint", "load": "load_checkpoint", "profile": "profile",
                 "profile_start_step": "profile_start_step", "profile_stop_step": "profile_stop_step",
                 "nccl_trace": "nccl_trace"}
    values, _ = resolve_knobs({knob: cli.get(field) or None for field, knob in env_names.items()}, environ)
    fields = {k: v for k, v in cli.items() if k not in env_names}
    fields.update({field: values[knob] for field, knob in env_names.items() if knob in values})
    if isinstance(fields.get("profile_ranks"), str):
        fields["profile_ranks"] = parse_ranks(fields["profile_ranks"])
    return RunOptions(**fields)


def run_request(
    workload: str | None,
    cli: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    proxy: str | None,
    nproc: int | None = None,
    settings: Mapping[str, Any] | None = None,
    options: RunOptions | None = None,
) -> RunRequest:
    """The :class:`RunRequest` of a local run: knobs (``size``, ``dtype``, ``gpu_type``,
    ``max_steps`` and the layout knobs) from the command line over the environment; ``proxy``
    None for full size; ``settings`` the engine's own options (seed, lr, window, data, ...)."""
    knobs, _ = resolve_knobs(cli, environ)
    total, per_node = knobs.get("gpus"), knobs.get("gpus_per_node")
    if total and per_node and total > per_node and nproc is None:
        raise LlmbError(
            f"JOB_TOTAL_GPUS={total} spans several nodes of {per_node}; start multi-node runs through a launcher"
        )
    try:
        return RunRequest(
            workload=workload or DEFAULT_WORKLOAD,
            size=knobs.get("size"),
            dtype=knobs.get("dtype"),
            gpu_type=knobs.get("gpu_type"),
            proxy=proxy,
            nproc=nproc if nproc is not None else (total if proxy is None else (total or 1)),
            gpus=total if proxy is None else None,
            overrides={k: knobs[k] for k in LAYOUT_KNOBS if k in knobs},
            steps=knobs.get("max_steps"),
            options=options or RunOptions(),
            **(settings or {}),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(map(str, first["loc"])).replace("_", "-")
        raise LlmbError(f"--{field}: {first['msg']} (got {first.get('input')!r})") from None
