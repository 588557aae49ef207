"""A run as asked for: the one record every way of starting a run fills in (``llmb run``,
``llmb submit``, bulk specs, tests, benchmarks) and :func:`llmb.plan.run.resolve_run` checks.

Precedence of the sources (command line > environment variable > cluster configuration >
recipe) is applied by the caller before the request is made; the request only says what was
asked. It is recorded in the experiment's ``config.json`` (:class:`llmb.records.RunConfig`),
so a run can be repeated from its folder.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmb.plan.options import RunOptions

DEFAULT_WORKLOAD = "llama3.1"
DEFAULT_PROXY = "default"  # proxies.yaml's default proxy
DP_MODES = ("fsdp", "ddp")
DEVICES = ("auto", "cpu", "cuda")


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workload: str = DEFAULT_WORKLOAD
    size: str | None = None
    dtype: str | None = None
    #: a proxy name from proxies.yaml, "default" for its default, None for full size
    proxy: str | None = DEFAULT_PROXY
    #: processes (ranks); None: the recipe's own scale at full size, 1 for a proxy
    nproc: int | None = None
    gpus: int | None = None  # JOB_TOTAL_GPUS, for full-size runs
    gpu_type: str | None = None
    overrides: dict[str, int | None] = Field(default_factory=dict)  # layout knobs (plan.layout.LAYOUT_KNOBS)
    pp_split: Literal["auto", "account", "plain"] = "auto"  # plan.layout.PP_SPLITS
    #: the recipe release whose layout and baseline to follow (None: the newest at that scale)
    release: str | None = None
    steps: int | None = None
    seed: int = 1234
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    lr_warmup_steps: int | None = None
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    warmup_steps: int | None = None  # steps excluded from the statistics window
    window: int | None = None  # steps in the statistics window (default: the reference window)
    dp_mode: Literal["fsdp", "ddp"] = "fsdp"
    compile: bool = False
    flops_convention: str = "recipe"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: training data: None for the recipes' synthetic tokens, "sample" for the shipped real-text
    #: sample, or the prefix of a Megatron-style indexed dataset (PREFIX.bin + PREFIX.idx)
    data: str | None = None
    options: RunOptions = Field(default_factory=RunOptions)
