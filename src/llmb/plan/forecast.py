"""Forecasts: what llmb predicts for one recipe, and the recipe facts a prediction needs.

* :func:`forecast`: memory (:mod:`llmb.plan.memory`), step-time breakdown
  (:mod:`llmb.plan.predict`), throughput and an uncertainty band for one recipe, at the
  recompute level its catalog row states (:func:`stated_recompute`) or the lightest that fits;
* :func:`baseline_step_s`: a published baseline's step time, what forecasts and the
  calibration (:mod:`llmb.plan.calibrate`) compare predictions with;
* :func:`resolve_on_gpu`: recipes for GPU types a workload publishes no layout for.

Units: seconds (``*_s``); the band is relative error as a fraction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from llmb.catalog.loader import Catalog
from llmb.catalog.schema import Baseline
from llmb.errors import LlmbError
from llmb.plan.memory import MemoryEstimate, estimate_memory, least_recompute_that_fits
from llmb.plan.metrics import RunMetrics
from llmb.plan.predict import Efficiency, StepBreakdown, predict_step
from llmb.plan.recipe import Recipe, resolve
from llmb.plan.shapes import RECOMPUTE_LEVELS

# "auto": the level the catalog states for the recipe, else the lightest that fits.
RECOMPUTE_CHOICES: tuple[str, ...] = ("auto", *RECOMPUTE_LEVELS)


@dataclass(frozen=True)
class Forecast:
    """Memory, step-time breakdown and throughput predicted for one recipe.

    ``band_s`` brackets the step time with the calibration's held-out errors (about 90 % of
    the cross-validated rows of the same family fell inside it)."""

    recipe: Recipe
    memory: MemoryEstimate
    breakdown: StepBreakdown
    band_s: tuple[float, float]

    @property
    def step_time_s(self) -> float:
        return self.breakdown.step_time_s

    @property
    def metrics(self) -> RunMetrics:
        return self.recipe.metrics(self.step_time_s)

    @property
    def measured_step_s(self) -> float | None:
        """The published step time of the recipe's baseline (seconds), if it has one."""
        return baseline_step_s(self.recipe, self.recipe.baseline)

    def as_dict(self) -> dict[str, Any]:
        measured = self.measured_step_s
        return {
            "recipe": self.recipe.title,
            "layout": self.recipe.layout.as_dict(),
            "derived": self.recipe.derived.as_dict(),
            "notes": list(self.recipe.notes),
            "recompute": self.breakdown.recompute,
            "attention_backend": self.recipe.attention_backend,
            "memory": self.memory.as_dict(),
            "breakdown": self.breakdown.as_dict(),
            "step_time_s": self.step_time_s,
            "step_time_band_s": list(self.band_s),
            "metrics": self.metrics.as_dict(),
            "mfu_megatron": self.recipe.metrics(self.step_time_s, "megatron").mfu,
            "baseline": (
                {
                    **self.recipe.baseline.model_dump(mode="json"),
                    "measured_step_s": measured,
                    "error_pct": None if measured is None else 100 * (self.step_time_s / measured - 1),
                }
                if self.recipe.baseline
                else None
            ),
        }


def forecast(
    recipe: Recipe,
    eff: Efficiency,
    recompute: str = "auto",
    band: tuple[float, float] = (0.0, 0.0),
) -> Forecast:
    """Predict ``recipe``; ``recompute="auto"`` takes the lightest level that fits in memory.

    ``band`` is the (low, high) signed relative error of held-out predictions; the step-time
    band is ``step / (1 + high) .. step / (1 + low)``."""
    if recompute not in RECOMPUTE_CHOICES:
        raise LlmbError(f"unknown recompute {recompute!r} (choose from {', '.join(RECOMPUTE_CHOICES)})")
    stated = stated_recompute(recipe) if recompute == "auto" else None
    if stated is not None:
        # The recipe says what it recomputes: predict that, even where llmb's memory model
        # (which carries a few GB of uncertainty) calls it tight.
        mem = estimate_memory(recipe.model, recipe.derived, recipe.gpu, recipe.dtype, stated)
    elif recompute == "auto":
        mem = least_recompute_that_fits(recipe.model, recipe.derived, recipe.gpu, recipe.dtype)
    else:
        mem = estimate_memory(recipe.model, recipe.derived, recipe.gpu, recipe.dtype, recompute)
    br = predict_step(recipe.model, recipe.derived, recipe.gpu, recipe.dtype, eff, mem.recompute, recipe.tp_comm_overlap,
                      recipe.attention_backend)
    return Forecast(recipe, mem, br, step_band_s(br.step_time_s, band))


def baseline_step_s(recipe: Recipe, baseline: Baseline | None) -> float | None:
    """Seconds per step of ``baseline`` (a published run of ``recipe``'s layout): the printed
    step time, else ``seq x GBS / (tokens/s/GPU x GPUs)``, else ``seq x GBS / tokens/s``;
    ``None`` without a baseline or a throughput."""
    if baseline is None:
        return None
    if baseline.step_time_s:
        return float(baseline.step_time_s)
    if baseline.tokens_per_s_per_gpu:
        return recipe.model.seq_len * recipe.layout.gbs / (baseline.tokens_per_s_per_gpu * recipe.gpus)
    if baseline.tokens_per_s:
        return recipe.model.seq_len * recipe.layout.gbs / baseline.tokens_per_s
    return None


def stated_recompute(recipe: Recipe) -> str | None:
    """The recompute level the catalog states for ``recipe``'s published layout (its listed
    row, or for a weak-scaled recipe the level every row of its table agrees on); ``None``
    when the catalog does not say or the layout was overridden."""
    if recipe.overridden:
        return None
    if recipe.row is not None:
        return recipe.row.recompute
    spec = recipe.workload.sizes[recipe.size]
    levels = {
        r.recompute for r in spec.layouts if r.gpu_type == recipe.gpu_type and recipe.dtype in r.dtypes
    }
    return levels.pop() if len(levels) == 1 else None


def step_band_s(step_s: float, band: tuple[float, float]) -> tuple[float, float]:
    """Step-time interval from held-out relative errors; it always contains the prediction
    (a family whose held-out errors were all one-signed, e.g. MoE predicted without any MoE
    data, widens the band on that side only)."""
    lo, hi = min(band[0], 0.0), max(band[1], 0.0)
    return step_s / (1 + hi), step_s / (1 + lo)


def resolve_on_gpu(
    catalog: Catalog,
    workload: str,
    size: str,
    dtype: str | None = None,
    gpus: int | None = None,
    gpu_type: str | None = None,
    overrides: dict[str, int | None] | None = None,
    pp_split: str = "auto",
    release: str | None = None,
) -> Recipe:
    """:func:`~llmb.plan.recipe.resolve`, extended to GPU types a workload publishes no layout
    for: the workload's default-GPU recipe is planned on the requested GPU instead, with a
    note saying so (no baseline applies then)."""
    if gpu_type is not None:
        wl = catalog.workload(workload)
        _, spec = catalog.size(wl, size)
        gkey = catalog.gpu_key(gpu_type)
        want = (dtype or wl.default_dtype).lower()
        if not any(r.gpu_type == gkey and want in r.dtypes for r in spec.layouts):
            base = resolve(catalog, workload, size, dtype, gpus, None, overrides, pp_split, release)
            gpu = catalog.gpus[gkey]
            gpu.peak_flops(base.dtype)  # a clear error when the GPU lacks the precision
            note = f"no published {gkey} layout: the {base.gpu_type} recipe's layout, planned on {gkey}"
            return replace(base, gpu_type=gkey, gpu=gpu, row=None, baseline=None, notes=(*base.notes, note))
    return resolve(catalog, workload, size, dtype, gpus, gpu_type, overrides, pp_split, release)
