"""Forecasts and layout search, on top of the step-time model (:mod:`llmb.plan.predict`) and
the memory model (:mod:`llmb.plan.memory`).

* :func:`forecast`: memory, step-time breakdown (seconds), throughput and an uncertainty band
  for one recipe, at the recompute level its catalog row states (or the lightest that fits).
* :func:`search_layouts`: enumerate the valid parallel layouts of a recipe's model, GPU count
  and global batch size, keep those that fit in memory (lightest recompute that fits), rank
  them by predicted step time; :func:`explain` compares the winner with the recipe's layout.

Pure Python; the per-layer costs of :mod:`llmb.plan.predict` are cached on the sizes they
depend on, so thousands of candidates (405b on 2048 GPUs) cost well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from llmb.catalog.loader import Catalog
from llmb.errors import LayoutError, LlmbError
from llmb.plan.layout import DerivedLayout, Layout, derive
from llmb.plan.memory import MemoryEstimate, estimate_memory, least_recompute_that_fits
from llmb.plan.metrics import RunMetrics
from llmb.plan.predict import Efficiency, StepBreakdown, predict_step
from llmb.plan.recipe import Recipe, resolve
from llmb.plan.shapes import RECOMPUTE_LEVELS

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
        b = self.recipe.baseline
        if b is None:
            return None
        if b.step_time_s:
            return float(b.step_time_s)
        if b.tokens_per_s_per_gpu:
            return self.recipe.model.seq_len * self.recipe.layout.gbs / (b.tokens_per_s_per_gpu * self.recipe.gpus)
        return None

    def as_dict(self) -> dict[str, Any]:
        measured = self.measured_step_s
        return {
            "recipe": self.recipe.title,
            "layout": self.recipe.layout.as_dict(),
            "derived": self.recipe.derived.as_dict(),
            "notes": list(self.recipe.notes),
            "recompute": self.breakdown.recompute,
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
    br = predict_step(recipe.model, recipe.derived, recipe.gpu, recipe.dtype, eff, mem.recompute)
    return Forecast(recipe, mem, br, _band_s(br.step_time_s, band))


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


def _band_s(step_s: float, band: tuple[float, float]) -> tuple[float, float]:
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
            base = resolve(catalog, workload, size, dtype, gpus, None, overrides)
            gpu = catalog.gpus[gkey]
            gpu.peak_flops(base.dtype)  # a clear error when the GPU lacks the precision
            note = f"no published {gkey} layout: the {base.gpu_type} recipe's layout, planned on {gkey}"
            return replace(base, gpu_type=gkey, gpu=gpu, row=None, baseline=None, notes=(*base.notes, note))
    return resolve(catalog, workload, size, dtype, gpus, gpu_type, overrides)


def _powers_of_two(limit: int) -> list[int]:
    out, v = [], 1
    while v <= limit:
        out.append(v)
        v *= 2
    return out


def candidate_layouts(recipe: Recipe) -> list[Layout]:
    """Layouts to try for ``recipe``'s model, GPU count and global batch size.

    TP up to the NVLink domain (and 8), CP up to 8, PP any divisor of the remaining GPUs up to
    32 and the layer count, VP up to 16 dividing the layers per stage, MBS 1/2/4; for MoE
    models EP over powers of two dividing the experts, at least experts/16 (fewer local
    experts than 16 per GPU), with ETP 1 or TP. The recipe's embedding/loss pipeline
    accounting is kept, and also tried the other way. When the recipe shards with FSDP, FSDP
    layouts (groups of 8 GPUs and up, TP inside a node, no pipeline) are tried too."""
    base = recipe.layout
    model = recipe.model
    gpus, gbs = base.gpus, base.gbs
    tps = [t for t in _powers_of_two(min(8, recipe.gpu.nvlink_domain)) if gpus % t == 0]
    moe = model.moe
    # MoE layouts multiply by the expert choices; keep their CP and MBS range small.
    cps = [c for c in _powers_of_two(2 if moe else 8) if gpus % c == 0]
    mbss = (1, 2) if moe else (1, 2, 4)
    out: list[Layout] = []
    seen: set[Layout] = set()
    for tp in tps:
        for cp in cps:
            rest = gpus // (tp * cp) if gpus % (tp * cp) == 0 else 0
            if not rest:
                continue
            for pp in [p for p in range(1, min(rest, model.layers, 32) + 1) if rest % p == 0]:
                dp = rest // pp
                for split in {base.embedding_in_pipeline_split, not base.embedding_in_pipeline_split}:
                    extra = 2 if (split and pp > 1) else 0
                    slots = model.layers + extra
                    if slots % pp:
                        continue
                    per_stage = slots // pp
                    vps = [1] if pp == 1 else [v for v in range(1, min(per_stage, 16) + 1) if per_stage % v == 0]
                    for vp in vps:
                        for mbs in mbss:
                            if gbs % (mbs * dp):
                                continue
                            eps: list[tuple[int, int | None]] = [(1, None)]
                            if moe is not None:
                                eps = [
                                    (e, et)
                                    for e in _powers_of_two(moe.num_experts)
                                    if moe.num_experts % e == 0
                                    and e * 16 >= moe.num_experts
                                    and (tp * cp * dp) % e == 0
                                    for et in sorted({1, tp})
                                    if (tp * cp * dp) % (e * et) == 0
                                ]
                            for ep, etp in eps:
                                lay = Layout(
                                        gpus=gpus,
                                        tp=tp,
                                        pp=pp,
                                        cp=cp,
                                        ep=ep,
                                        etp=etp,
                                        vp=vp if vp > 1 else None,
                                        mbs=mbs,
                                        gbs=gbs,
                                        fsdp=None,
                                        embedding_in_pipeline_split=split and pp > 1,
                                        loss_in_pipeline_split=split and pp > 1,
                                    )
                                if lay not in seen:
                                    seen.add(lay)
                                    out.append(lay)
    if base.fsdp:
        # The recipe shards with FSDP (MaxText style): also try FSDP groups of 8 GPUs and up,
        # with TP inside a node and no pipeline.
        for tp in tps:
            dp = gpus // tp
            for fsdp in (f for f in _powers_of_two(dp) if f >= 8 and dp % f == 0):
                for mbs in (1, 2, 4):
                    if gbs % (mbs * dp):
                        continue
                    lay = Layout(gpus=gpus, tp=tp, mbs=mbs, gbs=gbs, fsdp=fsdp)
                    if lay not in seen:
                        seen.add(lay)
                        out.append(lay)
    return out


@dataclass(frozen=True)
class SearchResult:
    """Layouts that fit, fastest first, and the recipe's own layout for comparison."""

    ranked: tuple[Forecast, ...]
    recipe_forecast: Forecast
    tried: int
    valid: int
    fitting: int


def search_layouts(recipe: Recipe, eff: Efficiency, top: int = 5, band: tuple[float, float] = (0.0, 0.0)) -> SearchResult:
    """Enumerate :func:`candidate_layouts`, keep those :func:`~llmb.plan.layout.derive` accepts
    and that fit in memory (lightest recompute that fits), rank by predicted step time."""
    if top <= 0:
        raise LlmbError(f"--top must be positive, got {top}")
    found: list[tuple[float, tuple[int, int, int, int], Layout, DerivedLayout, MemoryEstimate, StepBreakdown]] = []
    tried = valid = 0
    for lay in candidate_layouts(recipe):
        tried += 1
        try:
            derived = derive(lay, recipe.model)
        except LayoutError:
            continue
        valid += 1
        mem = _lightest_fitting(recipe, derived)
        if mem is None:
            continue
        br = predict_step(recipe.model, derived, recipe.gpu, recipe.dtype, eff, mem.recompute)
        found.append((round(br.step_time_s, 4), _complexity(lay), lay, derived, mem, br))
    # Ties (to 0.1 ms) go to the simpler layout: fewer model-parallel ranks, no interleaving.
    found.sort(key=lambda x: (x[0], x[1]))
    ranked = []
    for _, _, lay, derived, mem, br in found[:top]:
        # The search looked at the candidate ranks only; report every rank of the winners.
        mem = estimate_memory(recipe.model, derived, recipe.gpu, recipe.dtype, mem.recompute)
        cand = replace(recipe, layout=lay, derived=derived, row=None, baseline=None, overridden=(), notes=())
        ranked.append(Forecast(cand, mem, br, _band_s(br.step_time_s, band)))
    return SearchResult(
        ranked=tuple(ranked),
        recipe_forecast=forecast(recipe, eff, "auto", band),
        tried=tried,
        valid=valid,
        fitting=len(found),
    )


def _lightest_fitting(recipe: Recipe, derived: DerivedLayout) -> MemoryEstimate | None:
    """The lightest recompute level that fits, or ``None``: the same answer as
    :func:`~llmb.plan.memory.least_recompute_that_fits`, asked in the order that settles most
    candidates in one or two estimates (no recompute fits, or not even full recompute does)."""
    args = (recipe.model, derived, recipe.gpu, recipe.dtype)
    first = estimate_memory(*args, RECOMPUTE_LEVELS[0], worst_only=True)
    if first.fits:
        return first
    if not estimate_memory(*args, RECOMPUTE_LEVELS[-1], worst_only=True).fits:
        return None
    for level in RECOMPUTE_LEVELS[1:]:
        mem = estimate_memory(*args, level, worst_only=True)
        if mem.fits:
            return mem
    return None


def _complexity(lay: Layout) -> tuple[int, int, int, int, int]:
    return (lay.tp * lay.cp * lay.pp * lay.ep, lay.vp or 1, lay.fsdp or 0, lay.mbs, int(lay.embedding_in_pipeline_split))


_LABELS = {
    "gemm_s": "GEMMs",
    "attention_s": "attention",
    "elementwise_s": "element-wise",
    "tp_comm_s": "exposed TP comm",
    "cp_comm_s": "exposed CP comm",
    "ep_comm_s": "exposed EP all-to-all",
    "pp_comm_s": "exposed PP p2p",
    "fsdp_comm_s": "exposed FSDP comm",
    "bubble_s": "pipeline bubble",
    "dp_comm_s": "exposed DP comm",
    "optimizer_s": "optimizer",
}


def explain(winner: Forecast, reference: Forecast, items: int = 3) -> list[str]:
    """The largest differences between two forecasts' breakdowns, as short sentences."""
    a, b = winner.breakdown.as_dict(), reference.breakdown.as_dict()
    diffs = sorted(_LABELS, key=lambda k: -abs(float(a[k]) - float(b[k])))
    lines = []
    for k in diffs[:items]:
        d = float(a[k]) - float(b[k])
        if abs(d) < 1e-3:
            continue
        lines.append(f"{_LABELS[k]}: {float(b[k]):.3f} s -> {float(a[k]):.3f} s ({'+' if d > 0 else '-'}{abs(d):.3f} s)")
    if winner.breakdown.recompute != reference.breakdown.recompute:
        lines.append(f"recompute: {reference.breakdown.recompute} -> {winner.breakdown.recompute}")
    return lines
