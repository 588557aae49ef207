"""Layout search, on top of the memory model (:mod:`llmb.plan.memory`) and the step-time
model (:mod:`llmb.plan.predict`).

:func:`search_layouts` enumerates the valid parallel layouts of a recipe's model, GPU count
and global batch size (:func:`candidate_layouts`), keeps those that fit in memory (lightest
recompute that fits), ranks them by predicted step time (seconds) and returns them as
:class:`~llmb.plan.forecast.Forecast` objects; :func:`explain` compares the winner with the
recipe's own layout.

Pure Python; the per-layer costs of :mod:`llmb.plan.predict` are cached on the sizes they
depend on, so thousands of candidates (405b on 2048 GPUs) cost well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmb.errors import LayoutError, LlmbError
from llmb.plan.forecast import Forecast, forecast, step_band_s
from llmb.plan.layout import DerivedLayout, Layout, derive
from llmb.plan.memory import MemoryEstimate, estimate_memory
from llmb.plan.predict import Efficiency, StepBreakdown, predict_step
from llmb.plan.recipe import Recipe
from llmb.plan.shapes import RECOMPUTE_LEVELS


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
        br = predict_step(recipe.model, derived, recipe.gpu, recipe.dtype, eff, mem.recompute, recipe.tp_comm_overlap,
                          recipe.attention_backend)
        found.append((round(br.step_time_s, 4), _complexity(lay), lay, derived, mem, br))
    # Ties (to 0.1 ms) go to the simpler layout: fewer model-parallel ranks, no interleaving.
    found.sort(key=lambda x: (x[0], x[1]))
    ranked = []
    for _, _, lay, derived, mem, br in found[:top]:
        # The search looked at the candidate ranks only; report every rank of the winners.
        mem = estimate_memory(recipe.model, derived, recipe.gpu, recipe.dtype, mem.recompute)
        cand = replace(recipe, layout=lay, derived=derived, row=None, baseline=None, overridden=(), notes=())
        ranked.append(Forecast(cand, mem, br, step_band_s(br.step_time_s, band)))
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
