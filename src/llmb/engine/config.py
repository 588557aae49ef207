"""What one engine run will do: a catalog recipe, optionally shrunk to a proxy, with its
layout, precision, step counts and optimizer settings, resolved once and recorded as the
experiment's resolved config.

Pure Python (no torch import): resolving is instant and testable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from llmb.catalog import DTYPES, default_catalog
from llmb.engine.options import RunOptions, resolve_options
from llmb.errors import LlmbError
from llmb.plan.layout import DerivedLayout, Layout, derive
from llmb.plan.recipe import LAYOUT_KNOBS, Recipe, resolve

DEFAULT_WORKLOAD = "llama3.1"
DP_MODES = ("fsdp", "ddp")


@dataclass(frozen=True)
class RunRequest:
    """A run as asked for (CLI > environment > recipe already merged by the caller)."""

    workload: str = DEFAULT_WORKLOAD
    size: str | None = None
    dtype: str | None = None
    proxy: str | None = "default"  # None: full size; "default": proxies.yaml's default
    nproc: int = 1
    gpus: int | None = None  # JOB_TOTAL_GPUS, for full-size runs
    gpu_type: str | None = None
    overrides: dict[str, int | None] = field(default_factory=dict)
    steps: int | None = None
    seed: int = 1234
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    lr_warmup_steps: int | None = None
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    warmup_steps: int | None = None  # steps excluded from the statistics window
    window: int | None = None  # steps in the statistics window (default: all after warm-up)
    dp_mode: str = "fsdp"
    compile: bool = False
    flops_convention: str = "recipe"
    device: str = "auto"
    #: training data: None for the recipes' synthetic tokens, "sample" for the shipped real-text
    #: sample, or the prefix of a Megatron-style indexed dataset (PREFIX.bin + PREFIX.idx)
    data: str | None = None
    # Checkpoint, profiling and health settings (llmb.engine.options.RunOptions fields).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedRun:
    request: RunRequest
    recipe: Recipe  # model and layout are the proxy's when proxy is set
    proxy: str | None
    proxy_spec: dict[str, Any] | None
    full_model: dict[str, Any]
    world: int
    steps: int
    warmup_steps: int
    window: int
    lr_warmup_steps: int
    kept_parallelism: tuple[str, ...] = ()
    dropped_parallelism: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    options: RunOptions = RunOptions()

    @property
    def model(self):
        return self.recipe.model

    @property
    def layout(self) -> Layout:
        return self.recipe.layout

    @property
    def derived(self) -> DerivedLayout:
        return self.recipe.derived

    @property
    def parallel_dims(self):
        """The mesh sizes this run needs (:class:`~llmb.engine.parallel.mesh.ParallelDims`)."""
        from llmb.engine.parallel.mesh import ParallelDims

        d, lay, moe = self.derived, self.layout, self.model.moe is not None
        return ParallelDims(
            pp=lay.pp, dp=d.dp, cp=lay.cp, tp=lay.tp, ep=lay.ep if moe else 1, etp=d.etp if moe else 1
        )

    @property
    def size_label(self) -> str:
        return f"{self.recipe.size}-{self.proxy}" if self.proxy else self.recipe.size

    def as_dict(self) -> dict[str, Any]:
        d = self.recipe.as_dict()
        d.update(
            {
                "proxy": self.proxy,
                "proxy_shrink": self.proxy_spec,
                "full_model": self.full_model,
                "world_size": self.world,
                "parallelism_kept": list(self.kept_parallelism),
                "parallelism_dropped": list(self.dropped_parallelism),
                "steps": self.steps,
                "stats_warmup_steps": self.warmup_steps,
                "stats_window_steps": self.window,
                "lr_warmup_steps": self.lr_warmup_steps,
                "request": asdict(self.request),
                "engine_notes": list(self.notes),
                "options": self.options.as_dict(),
            }
        )
        return d


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise LlmbError(f"{name} must be a positive whole number, got {value!r}")


def resolve_run(req: RunRequest) -> ResolvedRun:
    """Resolve ``req``; every user mistake raises a one-line :class:`LlmbError`."""
    from llmb.engine.proxy import load_proxies, proxy_layout, proxy_spec, shrink_model

    for name in ("nproc", "gpus", "steps", "window"):
        _positive(name, getattr(req, name))
    if req.warmup_steps is not None and req.warmup_steps < 0:
        raise LlmbError(f"warm-up steps must be >= 0, got {req.warmup_steps}")
    if req.dp_mode not in DP_MODES:
        raise LlmbError(f"unknown data-parallel mode {req.dp_mode!r} (choose from {', '.join(DP_MODES)})")
    unknown = set(req.overrides) - set(LAYOUT_KNOBS)
    if unknown:
        raise LlmbError(f"unknown layout knob(s): {', '.join(sorted(unknown))}")
    catalog = default_catalog()
    wl = catalog.workload(req.workload)
    size = req.size or next(iter(wl.sizes))
    overrides = {k: v for k, v in req.overrides.items() if v is not None}
    notes: list[str] = []

    if req.proxy is None:
        gpus = req.gpus or req.nproc
        recipe = resolve(catalog, wl.name, size, req.dtype, gpus, req.gpu_type, overrides)
        if recipe.gpus != req.nproc:
            raise LlmbError(
                f"the full-size layout needs {recipe.gpus} processes but --nproc is {req.nproc} "
                "(multi-node runs go through a launcher)"
            )
        proxy_name, pspec, kept, dropped = None, None, (), ()
    else:
        proxy_name = load_proxies().default if req.proxy == "default" else req.proxy
        spec = proxy_spec(proxy_name)
        # The recipe at its smallest published scale gives the kinds of parallelism. Proxies
        # may run in any precision, also one the recipe does not publish (fp32 on CPU).
        dtype = (req.dtype or wl.default_dtype).lower()
        if dtype not in DTYPES:
            raise LlmbError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")
        published = {d for r in catalog.size(wl, size)[1].layouts for d in r.dtypes}
        base = resolve(catalog, wl.name, size, dtype if dtype in published else None, None, req.gpu_type)
        model = shrink_model(base.model, spec)
        pl = proxy_layout(base.layout, base.derived.dp, model, spec, req.nproc)
        layout = replace(pl.layout, **overrides) if overrides else pl.layout
        if overrides:
            notes.append("proxy layout overridden: " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
        if layout.gpus != req.nproc:
            raise LlmbError(f"a proxy runs on --nproc ranks ({req.nproc}); GPUs cannot be overridden")
        derived = derive(layout, model)
        recipe = replace(
            base, dtype=dtype, model=model, layout=layout, derived=derived, row=None, baseline=None,
            overridden=tuple(overrides), notes=base.notes + pl.notes + derived.warnings,
        )
        pspec, kept, dropped = spec.model_dump(), pl.kept, pl.dropped
        if dropped:
            notes.append(
                f"{req.nproc} rank(s) cannot hold every kind of parallelism of the recipe; "
                f"not exercised: {', '.join(dropped)}"
            )
    steps = req.steps or wl.max_steps
    if req.warmup_steps is None and req.window is None:
        # The same default as every parsed log: the reference window 11-44 of 50 steps, scaled.
        from llmb.results.stats import default_window

        default = default_window(steps)
        warmup, window = default.first - 1, default.size
    else:
        warmup = req.warmup_steps if req.warmup_steps is not None else min(5, max(0, steps // 5))
        if warmup >= steps:
            raise LlmbError(f"warm-up steps ({warmup}) must be fewer than the run's steps ({steps})")
        window = min(req.window or steps - warmup, steps - warmup)
    lr_warmup = req.lr_warmup_steps if req.lr_warmup_steps is not None else max(1, min(100, steps // 10))
    return ResolvedRun(
        request=req, recipe=recipe, proxy=proxy_name, proxy_spec=pspec,
        full_model=catalog.size(wl, size)[1].model.model_dump(mode="json"),
        world=recipe.gpus, steps=steps, warmup_steps=warmup, window=window,
        lr_warmup_steps=lr_warmup, kept_parallelism=tuple(kept), dropped_parallelism=tuple(dropped),
        notes=tuple(notes),
        options=resolve_options(req.options, steps, recipe.gpus, wl.profile_steps),
    )
