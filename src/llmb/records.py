"""The typed records of an engine run: what it was asked and resolved to (:class:`RunConfig`,
``config.json``) and what it measured (:class:`RunSummary`, ``summary.json``).

The launcher writes the config before any process starts; the engine's workers run exactly
the recorded run (:meth:`llmb.plan.run.ResolvedRun.from_config`) and rank 0 adds the hardware
it ran on; the runner writes the summary; the CLI's result table, results analysis, the job
store and reports read both. No dict of string keys crosses a package for them.

Both are versioned (``schema_version``); a file of another version is refused with one line,
as is a malformed one. Floats that a broken run produces (NaN, inf) are kept as JSON's
``NaN`` / ``Infinity`` constants, which Python's ``json`` reads back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from llmb.catalog.schema import ModelSpec
from llmb.datafile import format_validation_error
from llmb.errors import LlmbError
from llmb.plan.layout import DerivedLayout, Layout
from llmb.plan.metrics import RunMetrics
from llmb.plan.options import RunOptions
from llmb.plan.request import RunRequest

SCHEMA_VERSION = 1
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
Status = Literal["complete", "interrupted", "invalid", "failed"]
#: llmb's engine and the frameworks llmb launches (llmb.launch.backends.BACKENDS)
Backend = Literal["llmb", "megatron", "nemo2", "nemo1", "maxtext", "torchtitan"]

R = TypeVar("R", bound="Record")


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def from_json(cls: type[R], text: str, name: str = "record") -> R:
        try:
            version = json.loads(text).get("schema_version") if text.strip().startswith("{") else None
        except ValueError:
            version = None
        if "schema_version" in cls.model_fields and version not in (None, SCHEMA_VERSION):
            raise LlmbError(f"{name}: schema version {version!r}; this llmb reads version {SCHEMA_VERSION}")
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise LlmbError(format_validation_error(name, exc)) from None

    @classmethod
    def read(cls: type[R], path: Path) -> R:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LlmbError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        return cls.from_json(text, str(path))

    def write(self, path: Path) -> None:
        """Write atomically: aside, then renamed over ``path``."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)


class RunLayout(Record):
    """The parallel layout that ran (after proxy shrinking and overrides) and what follows
    from it."""

    gpus: int
    tp: int
    pp: int
    cp: int
    ep: int
    etp: int | None  # None for dense models
    vp: int | None
    mbs: int
    gbs: int
    fsdp: int | None = None
    embedding_in_pipeline_split: bool = False
    loss_in_pipeline_split: bool = False
    dp: int
    ga: int
    edp: int
    layers_per_stage: tuple[int, ...]

    @classmethod
    def of(cls, derived: DerivedLayout) -> RunLayout:
        lay = derived.layout
        return cls(
            **{**lay.as_dict(), "etp": derived.etp if derived.moe else None}, dp=derived.dp, ga=derived.ga,
            edp=derived.edp, layers_per_stage=derived.layers_per_stage,
        )

    def layout(self) -> Layout:
        """The :class:`~llmb.plan.layout.Layout` to derive again (e.g. for another model)."""
        return Layout(**self.model_dump(exclude={"dp", "ga", "edp", "layers_per_stage"}))

    @property
    def label(self) -> str:
        """``TP2 PP1 CP1 EP1 VP1 DP2  MBS2 GBS8 GA2`` (``ETP`` shown for MoE layouts)."""
        etp = f" ETP{self.etp}" if self.etp else ""
        return (f"TP{self.tp} PP{self.pp} CP{self.cp} EP{self.ep}{etp} VP{self.vp or 1} DP{self.dp}  "
                f"MBS{self.mbs} GBS{self.gbs} GA{self.ga}")


class Denominator(Record):
    """What MFU divides by: FLOP/s per device, and the words said wherever MFU is printed."""

    flops: float
    label: str


class Hardware(Record):
    """What the run followed and what it ran on."""

    gpu_type: str  # the catalog GPU whose recipe layout (and peak) the run follows
    device: Literal["cpu", "cuda"] | None = None  # what the ranks computed on (set by the engine)
    device_name: str | None = None  # e.g. "NVIDIA H200"
    mfu_denominator: Denominator | None = None  # set by the engine


class RunConfig(Record):
    """A resolved engine run (``config.json``): enough to run it again exactly, and to read
    its log without the catalog's help for the model and layout."""

    schema_version: Literal[1] = SCHEMA_VERSION
    #: what runs it: llmb's engine, or the framework llmb launched (llmb.launch.backends)
    backend: Backend = "llmb"
    workload: str
    size: str  # the catalog size, e.g. "8b"
    proxy: str | None  # the proxy it was shrunk to, e.g. "cpu-small"; None at full size
    size_label: str  # "8b-cpu-small": size and proxy, as experiment folders name it
    dtype: str
    world_size: int
    hardware: Hardware
    layout: RunLayout
    model: ModelSpec  # the model that ran (the proxy's when shrunk)
    full_model: ModelSpec  # the catalog's model of this size
    listed: bool  # the layout is a published row of the catalog
    overridden: tuple[str, ...] = ()
    recipe_notes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    parallelism_kept: tuple[str, ...] = ()
    parallelism_dropped: tuple[str, ...] = ()
    proxy_shrink: dict[str, int | str] | None = None
    steps: int
    stats_warmup_steps: int
    stats_window_steps: int
    lr_warmup_steps: int
    flops_convention: str
    flops_per_sample: dict[str, float]  # per convention, FLOP per sample (fwd + bwd)
    params_total: int
    params_active: int
    request: RunRequest  # as asked
    options: RunOptions  # as resolved (profiled window, start checkpoint)


class WindowSummary(Record):
    """Step-time statistics of the window (seconds; ``std`` is the sample std)."""

    first_step: int
    last_step: int
    mean: float
    std: float | None
    min: float
    max: float
    median: float
    count: int


class CheckpointSave(Record):
    step: int
    duration_s: float
    bytes: int | None  # known on rank 0
    asynchronous: bool
    path: str


class Resumed(Record):
    path: str
    step: int
    load_time_s: float
    saved_world_size: int | None
    rng_restored: bool
    restart_count: int


class RunSummary(Record):
    """What an engine run measured (``summary.json``, also written after Ctrl-C or a NaN)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    backend: Literal["llmb"] = "llmb"
    status: Status
    warnings: tuple[str, ...] = ()
    workload: str
    size: str
    proxy: str | None
    size_label: str
    dtype: str
    world_size: int
    hardware: Hardware
    layout: RunLayout
    steps_planned: int
    steps_completed: int
    window: WindowSummary | None
    window_complete: bool
    metrics: RunMetrics | None  # at the window's mean step time
    flops_per_sample: float
    flops_convention: str
    first_loss: float | None
    final_loss: float | None
    wall_time_s: float
    experiment_dir: str | None
    invalid_reason: str | None = None
    failure: str | None = None  # why a "failed" run stopped (a system failure, in words)
    resumed_from: Resumed | None = None
    checkpoints: tuple[CheckpointSave, ...] = ()
    profiled_steps: tuple[int, int] | None = None
    timing_comparable: bool = True
    timing_note: str | None = None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """The summary as plain JSON data (``--json`` output)."""
        return json.loads(self.model_dump_json())
