"""Run resolution: a :class:`~llmb.plan.request.RunRequest` -> the :class:`ResolvedRun` every
launcher starts and every engine worker executes.

A catalog recipe, optionally shrunk to a CPU proxy (:mod:`llmb.plan.proxy`), with its layout
(after overrides), precision, step counts, statistics window, optimizer and checkpoint /
profiling options. Every check that needs no torch and no process happens here, once, before
any experiment folder exists: numeric ranges, layout constraints, fp8 on a host without CUDA,
the checkpoint ``--load`` / ``--resume`` start from, the weights ``--init-from`` names (their
architecture against the run's model), the dataset ``--data`` names.

A resolved run is recorded as the experiment's ``config.json`` (:meth:`ResolvedRun.config`, a
:class:`~llmb.records.RunConfig`); workers rebuild the very same run from it
(:meth:`ResolvedRun.from_config`) instead of resolving again.

Pure Python (no torch import): resolving is instant and testable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from llmb.catalog import DTYPES, default_catalog
from llmb.catalog.loader import Catalog
from llmb.catalog.schema import ModelSpec
from llmb.errors import CatalogError, LlmbError
from llmb.plan.flops import CONVENTIONS
from llmb.plan.layout import LAYOUT_KNOBS, DerivedLayout, Layout, ParallelDims, derive
from llmb.plan.options import RunOptions, resolve_options
from llmb.plan.proxy import ProxySpec, load_proxies, proxy_layout, proxy_spec, shrink_model
from llmb.plan.recipe import Recipe, baseline_at, resolve
from llmb.plan.request import DEFAULT_PROXY, DEFAULT_WORKLOAD, RunRequest
from llmb.plan.window import default_window
from llmb.records import Hardware, RunConfig, RunLayout

__all__ = ["DEFAULT_WORKLOAD", "MAX_SEED", "MAX_STEPS", "ResolvedRun", "RunRequest", "resolve_run"]

#: Longer runs are a typo, not a benchmark (the recipes run 50 to a few thousand steps).
MAX_STEPS = 10_000_000
#: Seeds feed 63-bit generators.
MAX_SEED = 2**63 - 1
ACCELERATORS = ("cpu", "cuda")


@dataclass(frozen=True)
class ResolvedRun:
    request: RunRequest
    recipe: Recipe  # model and layout are the proxy's when proxy is set
    proxy: str | None
    proxy_spec: ProxySpec | None
    full_model: ModelSpec
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
    def model(self) -> ModelSpec:
        return self.recipe.model

    @property
    def layout(self) -> Layout:
        return self.recipe.layout

    @property
    def derived(self) -> DerivedLayout:
        return self.recipe.derived

    @property
    def parallel_dims(self) -> ParallelDims:
        """The mesh sizes this run needs (from its derived layout)."""
        return self.derived.parallel_dims

    @property
    def size_label(self) -> str:
        return f"{self.recipe.size}-{self.proxy}" if self.proxy else self.recipe.size

    @property
    def title(self) -> str:
        return f"{self.recipe.workload.name} {self.size_label} {self.recipe.dtype}"

    def config(self, hardware: Hardware | None = None) -> RunConfig:
        """The run's record (``config.json``); ``hardware`` as the engine found it, else the
        recipe's GPU type only."""
        r = self.recipe
        params = r.params()
        return RunConfig(
            workload=r.workload.name, size=r.size, proxy=self.proxy, size_label=self.size_label, dtype=r.dtype,
            world_size=self.world, hardware=hardware or Hardware(gpu_type=r.gpu_type),
            layout=RunLayout.of(self.derived), model=r.model, full_model=self.full_model, listed=r.row is not None,
            overridden=r.overridden, recipe_notes=r.notes, notes=self.notes,
            parallelism_kept=self.kept_parallelism, parallelism_dropped=self.dropped_parallelism,
            proxy_shrink=self.proxy_spec.model_dump() if self.proxy_spec else None,
            steps=self.steps, stats_warmup_steps=self.warmup_steps, stats_window_steps=self.window,
            lr_warmup_steps=self.lr_warmup_steps, flops_convention=self.request.flops_convention,
            flops_per_sample={c: r.flops_per_sample(c) for c in CONVENTIONS},
            params_total=params.total, params_active=params.active,
            request=self.request, options=self.options,
        )

    @classmethod
    def from_config(cls, cfg: RunConfig, catalog: Catalog | None = None) -> ResolvedRun:
        """The run ``cfg`` records, model and layout exactly as recorded (also a proxy's): what
        a worker executes and what results analyse. The catalog supplies the workload's
        conventions (FLOPs formula, steps, profile window) and the GPU's numbers."""
        catalog = catalog or default_catalog()
        wl = catalog.workload(cfg.workload)
        size, spec = catalog.size(wl, cfg.size)
        gkey = catalog.gpu_key(cfg.hardware.gpu_type)
        layout = cfg.layout.layout()
        derived = derive(layout, cfg.model)
        baseline = baseline_at(spec, gkey, cfg.dtype, layout.gpus) if cfg.model == spec.model else None
        recipe = Recipe(
            workload=wl, size=size, dtype=cfg.dtype, gpu_type=gkey, gpu=catalog.gpus[gkey], model=cfg.model,
            layout=layout, derived=derived, row=None, baseline=baseline, overridden=cfg.overridden,
            notes=cfg.recipe_notes,
        )
        denominator = cfg.hardware.mfu_denominator
        if denominator is not None:
            recipe = replace(recipe, peak_override=(denominator.flops, denominator.label))
        return cls(
            request=cfg.request, recipe=recipe, proxy=cfg.proxy,
            proxy_spec=ProxySpec.model_validate(cfg.proxy_shrink) if cfg.proxy_shrink else None,
            full_model=cfg.full_model, world=cfg.world_size, steps=cfg.steps, warmup_steps=cfg.stats_warmup_steps,
            window=cfg.stats_window_steps, lr_warmup_steps=cfg.lr_warmup_steps,
            kept_parallelism=cfg.parallelism_kept, dropped_parallelism=cfg.parallelism_dropped, notes=cfg.notes,
            options=cfg.options,
        )


def _whole(name: str, value: object, low: int = 1, high: int | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        if high is not None:
            what = f"a whole number from {low} to {high:,}"
        else:
            what = "a positive whole number" if low == 1 else f"a whole number >= {low}"
        raise LlmbError(f"{name} must be {what}, got {value!r}")


def _finite(name: str, value: float, low: float = 0.0, low_ok: bool = False, high: float | None = None) -> None:
    ok = math.isfinite(value) and (value >= low if low_ok else value > low) and (high is None or value <= high)
    if not ok:
        rel = ">=" if low_ok else ">"
        upper = f" and <= {high:g}" if high is not None else ""
        raise LlmbError(f"{name} must be a finite number {rel} {low:g}{upper}, got {value!r}")


def _check_request(req: RunRequest) -> None:
    _whole("--nproc", req.nproc)
    _whole("the GPU count (JOB_TOTAL_GPUS)", req.gpus)
    _whole("--window", req.window)
    _whole("--steps (MAX_STEPS)", req.steps, high=MAX_STEPS)
    _whole("--warmup-steps", req.warmup_steps, low=0)
    _whole("LR warm-up steps", req.lr_warmup_steps, low=0)
    _whole("--seed", req.seed, low=0, high=MAX_SEED)
    _finite("the learning rate (--lr)", req.lr, high=10.0)
    _finite("min_lr_ratio", req.min_lr_ratio, low_ok=True, high=1.0)
    _finite("weight decay", req.weight_decay, low_ok=True)
    _finite("gradient clipping", req.grad_clip)
    if req.flops_convention not in CONVENTIONS:
        raise LlmbError(f"unknown FLOPs convention {req.flops_convention!r} (choose from {', '.join(CONVENTIONS)})")
    unknown = set(req.overrides) - set(LAYOUT_KNOBS)
    if unknown:
        raise LlmbError(f"unknown layout knob(s): {', '.join(sorted(unknown))}")
    for knob, value in req.overrides.items():
        _whole(knob.upper(), value)


def resolve_run(
    req: RunRequest,
    *,
    accelerator: str | None = None,
    experiments_root: Path | None = None,
    check_files: bool = True,
) -> ResolvedRun:
    """Resolve ``req``; every user mistake raises a one-line :class:`LlmbError`.

    ``accelerator`` is what the run's host offers (``"cpu"`` or ``"cuda"``; None: unknown, as
    for a script that only plans). ``experiments_root`` is where ``--resume`` looks for the
    experiment's earlier runs (default: :func:`llmb.paths.experiments_root`). With
    ``check_files`` the start checkpoint and the dataset are checked on disk."""
    _check_request(req)
    if accelerator is not None and accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator must be one of {ACCELERATORS}, got {accelerator!r}")
    catalog = default_catalog()
    wl = catalog.workload(req.workload)
    size = req.size or next(iter(wl.sizes))
    size_key, spec = catalog.size(wl, size)
    overrides = {k: v for k, v in req.overrides.items() if v is not None}
    notes: list[str] = []

    if req.proxy is None:
        gpus = req.gpus or req.nproc
        recipe = resolve(catalog, wl.name, size_key, req.dtype, gpus, req.gpu_type, overrides, req.pp_split,
                         req.release)
        if req.nproc is not None and recipe.gpus != req.nproc:
            raise LlmbError(
                f"the full-size layout needs {recipe.gpus} processes but --nproc is {req.nproc} "
                "(multi-node runs go through a launcher)"
            )
        proxy_name, pspec, kept, dropped = None, None, (), ()
    else:
        proxy_name = load_proxies().default if req.proxy == DEFAULT_PROXY else req.proxy
        pspec = proxy_spec(proxy_name)
        # The recipe at its smallest published scale gives the kinds of parallelism. Proxies
        # may run in any precision, also one the recipe does not publish (fp32 on CPU).
        dtype = (req.dtype or wl.default_dtype).lower()
        if dtype not in DTYPES:
            raise CatalogError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")
        published = {d for r in spec.layouts for d in r.dtypes}
        base = resolve(catalog, wl.name, size_key, dtype if dtype in published else None, None, req.gpu_type,
                       release=req.release)
        model = shrink_model(base.model, pspec)
        layers = overrides.pop("layers", None)
        if layers is not None:  # the proxy's own layer count (the layout below splits them)
            model = model.with_layers(layers)
        nproc = req.nproc or 1
        pl = proxy_layout(base.layout, base.derived.dp, model, pspec.model_copy(update={"layers": model.layers}), nproc)
        layout = replace(pl.layout, **overrides) if overrides else pl.layout
        if overrides or layers is not None:
            given = {**overrides, **({"layers": layers} if layers is not None else {})}
            notes.append("proxy layout overridden: " + ", ".join(f"{k}={v}" for k, v in given.items()))
        if layout.gpus != nproc:
            raise LlmbError(f"a proxy runs on --nproc ranks ({nproc}); GPUs cannot be overridden")
        derived = derive(layout, model)
        recipe = replace(
            base, dtype=dtype, model=model, layout=layout, derived=derived, row=None, baseline=None,
            overridden=tuple(overrides), notes=base.notes + pl.notes + derived.warnings,
        )
        # What ran and what of the recipe did not, after the overrides (not the proxy's plan).
        dims = derived.parallel_dims
        ran = {"pp": dims.pp > 1, "tp": dims.tp > 1, "cp": dims.cp > 1, "ep": dims.ep > 1,
               "etp": dims.etp > 1, "dp": dims.dp > 1}
        kept = tuple(k for k, r in ran.items() if r)
        dropped = tuple(k for k in ran if k in pl.used and not ran[k])
        if dropped:
            notes.append(
                f"{nproc} rank(s) cannot hold every kind of parallelism of the recipe; "
                f"not exercised: {', '.join(dropped)}"
            )
    if recipe.dtype == "fp8" and accelerator == "cpu":
        raise LlmbError(
            "fp8 needs a CUDA GPU with FP8 tensor cores (H100 or newer) and torchao; on CPU use --dtype bf16 or fp32"
        )

    steps = req.steps or wl.max_steps
    if req.warmup_steps is None and req.window is None:
        # The same default as every parsed log: the reference window 11-44 of 50 steps, scaled.
        default = default_window(steps)
        warmup, window = default.first - 1, default.size
    else:
        warmup = req.warmup_steps if req.warmup_steps is not None else min(5, max(0, steps // 5))
        if warmup >= steps:
            raise LlmbError(f"warm-up steps ({warmup}) must be fewer than the run's steps ({steps})")
        window = min(req.window or steps - warmup, steps - warmup)
    lr_warmup = req.lr_warmup_steps if req.lr_warmup_steps is not None else max(1, min(100, steps // 10))
    options = resolve_options(req.options, steps, recipe.gpus, wl.profile_steps)
    run = ResolvedRun(
        request=req, recipe=recipe, proxy=proxy_name, proxy_spec=pspec, full_model=spec.model,
        world=recipe.gpus, steps=steps, warmup_steps=warmup, window=window, lr_warmup_steps=lr_warmup,
        kept_parallelism=tuple(kept), dropped_parallelism=tuple(dropped), notes=tuple(notes), options=options,
    )
    if check_files:
        run = _check_files(run, experiments_root)
    return run


def _check_files(run: ResolvedRun, experiments_root: Path | None) -> ResolvedRun:
    """The checkpoint or weights the run starts from, and its dataset: all must be usable now."""
    from llmb.checkpoint_files import latest_of_experiment, resolve_load_path
    from llmb.paths import experiment_name, experiments_root as default_root

    opts = run.options
    start = None
    if opts.load:
        start = resolve_load_path(opts.load)
    elif opts.resume:
        folder = (experiments_root or default_root()) / experiment_name(
            run.recipe.workload.name, run.size_label, run.recipe.dtype, run.world
        )
        start = latest_of_experiment(folder)
        if start is None:
            raise LlmbError(f"--resume: no complete checkpoint in earlier runs of {folder}")
    if start is not None:
        run = replace(run, options=opts.model_copy(update={"start_checkpoint": str(start.resolve())}))
    if opts.init_from:
        from llmb.plan.pretrained import check_source_fits, parse_init_source

        source = parse_init_source(opts.init_from)
        check_source_fits(source, run.model)
        run = replace(run, options=run.options.model_copy(update={"init_source": source.text}))
    if run.request.data:
        from llmb.data import open_dataset

        open_dataset(run.request.data, run.model.vocab)
    return run
