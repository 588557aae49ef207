"""Calibration of the step-time model's global efficiencies, and its cross-validation.

Procedure (deterministic, no randomness, numpy not needed):

1. **Samples**: every catalog baseline with a step time - printed, or for the Megatron-LM
   rows ``seq x GBS / (tokens/s/GPU x GPUs)`` (:func:`~llmb.plan.forecast.baseline_step_s`) -
   resolved to its recipe layout. The recompute
   level is the one the catalog's layout row states (from the recipe's public config); where
   it states none, the lightest level the memory model says fits.
2. **Loss**: weighted mean of squared log errors ``log(predicted / measured)^2``; each
   published table (workload, size, dtype, GPU type) weighs 1 in total, so a table with six
   scales does not count six times as much as a single row. The objective adds a weak prior
   (:data:`PRIOR`: centers from public microbenchmarks, wide standard deviations; see
   :func:`prior_penalty`) so that parameters the tables cannot tell apart (attention
   efficiency against the GEMM knee, say) stay physical instead of drifting to a bound; the
   prior never sees the catalog.
3. **Fit**: coordinate descent over the parameters of :class:`~llmb.plan.predict.Efficiency`,
   starting from its defaults (the prior's centers): fractions, the knee and the ring-step
   latency move multiplicatively (log space), the overlap additively; each parameter tries a
   step up and down and keeps moving while the objective falls; when no parameter improves,
   the step halves, down to ``1/64`` of the first. Parameters stay within physical bounds
   (fractions in (0, 1]); the result is rounded to four significant digits.
4. **Cross-validation**, three schemes, each predicting every row by a fit that never saw
   its group: leave one workload (catalog file) out, the headline; leave one GPU type out
   (H100 predicted from GB200 rows alone and GB200 from H100 rows alone); and, milder, leave
   one published table (workload, size, dtype, GPU type, release) out. Reported per family
   (dense/MoE, BF16/FP8, H100/GB200, the framework: NeMo 1 / NeMo 2 / Megatron-LM / MaxText)
   as MAPE, median and max absolute error and bias (mean signed error), with the band
   coverage (the share of held-out rows whose measured step time lies inside the stored band
   of the forecast: ~90 % by construction for the workload-out scheme the bands come from, a
   real test for the others), next to two naive baselines: a constant MFU (the training rows'
   geometric-mean MFU under the ``megatron`` FLOPs convention, fitted per fold) and the
   uncalibrated roofline (:meth:`Efficiency.roofline`). Which workloads identify
   which parameter is measured by :mod:`llmb.plan.identification` (the share of each
   parameter's conditional information lost without each workload, at the fit). The GEMM
   knee's peak scaling ``knee_exponent`` is held at 1, what measured GEMMs say (it rested on
   GB200's rows when fitted). No fitted parameter is MoE-specific: the grouped-GEMM factors
   and the router skew are held (see :class:`~llmb.plan.predict.Efficiency`), because only
   one workload informed each (the grouped-GEMM factors Grok-1, the skew Maverick) and both
   MoE recipes pad every expert to capacity factor 1.0, which leaves no skew to fit.
   The flash-attn efficiency ``attention_flash`` is informed by the rows whose launcher selects
   it: Grok-1's and Nemotron-4 340B's NeMo 1 releases.
   No parameter is GPU-specific: another GPU differs from H100 only through the hardware
   table (peaks, the measured matmul ceiling ``achievable_tflops``, HBM, NVLink and NIC
   rates, the NVLink domain), so holding GB200 out (or H100) measures those mechanisms alone.

The fitted parameters, the procedure, the catalog fingerprint they were fitted on and the
cross-validation summary are stored in ``calibration.json`` next to this module.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from statistics import median
from typing import Any, Callable, Iterable, Mapping

from llmb.catalog.loader import Catalog
from llmb.errors import LlmbError
from llmb.plan.flops import flops_per_sample
from llmb.plan.forecast import baseline_step_s, stated_recompute
from llmb.plan.memory import least_recompute_that_fits
from llmb.plan.predict import Efficiency, predict_step
from llmb.plan.recipe import Recipe, resolve

CALIBRATION_FILE = "calibration.json"
FIT_START = Efficiency()
# name -> (low, high, scale); "log" moves multiplicatively, "lin" additively.
BOUNDS: dict[str, tuple[float, float, str]] = {
    "gemm_bf16": (0.05, 1.0, "log"),
    "gemm_fp8": (0.05, 1.0, "log"),
    "gemm_knee": (1.0, 4096.0, "log"),
    "attention": (0.05, 1.0, "log"),
    "attention_flash": (0.05, 1.0, "log"),
    "hbm": (0.05, 1.0, "log"),
    "link": (0.05, 1.0, "log"),
    "overlap": (0.0, 1.0, "lin"),
    "ring_step_us": (1.0, 200.0, "log"),
}
# Prior (center, standard deviation) of each parameter, from public microbenchmarks rather
# than from the catalog: large cuBLAS GEMMs reach ~75-80 % of the dense peak in BF16 and
# ~65-70 % in FP8 on H100; cuDNN's fused attention forward + backward ~50-60 % of the BF16 peak, the
# flash-attn package's FlashAttention-2 ~35 % (FlashAttention-3's paper, H100);
# streaming kernels ~80 % of HBM bandwidth; NCCL ~80 % of NVLink / NIC line rate; most TP/PP
# traffic hidden by userbuffers / overlapped p2p; a ring step (and an all-to-all's step per
# peer) across the network 14 us (NCCL's tuning model, src/graph/tuning.cc: hwLat NET /
# Ring / Simple) (the centers are :class:`Efficiency`'s defaults, also the fit's start).
# Standard deviations are wide (25 % for efficiencies, a factor e for the knee and the ring
# step latency, 0.2 for the overlap): the prior only settles
# what the published tables cannot tell apart.
PRIOR_SD: dict[str, float] = {name: 0.25 for name in BOUNDS} | {
    "gemm_knee": 1.0,
    "overlap": 0.2,
    "ring_step_us": 1.0,
}
PRIOR: dict[str, tuple[float, float]] = {n: (getattr(FIT_START, n), sd) for n, sd in PRIOR_SD.items()}
TABLE_NOISE = 0.04  # typical relative error of one published table (seconds per step)
FIRST_STEP = 0.2
STEP_HALVINGS = 6


@dataclass(frozen=True)
class Sample:
    """One published step time and the recipe it belongs to."""

    workload: str
    size: str
    dtype: str
    gpus: int
    gpu_type: str
    measured_step_s: float
    recipe: Recipe
    recompute: str
    release: str = ""
    framework: str = ""
    #: the label names the release too (the same configuration is published by several)
    release_in_label: bool = False

    @property
    def table(self) -> tuple[str, ...]:
        return (self.workload, self.size, self.dtype, self.gpu_type, self.release)

    @property
    def moe(self) -> bool:
        return self.recipe.model.moe is not None

    @property
    def label(self) -> str:
        base = f"{self.workload} {self.size} {self.dtype} {self.gpus}x{self.gpu_type}"
        return f"{base} {self.release}" if self.release_in_label else base

    def families(self) -> tuple[str, ...]:
        return ("all", "moe" if self.moe else "dense", self.dtype, self.gpu_type, self.framework)


def samples(catalog: Catalog) -> list[Sample]:
    """Every catalog baseline with a step time, resolved to its layout."""
    out: list[Sample] = []
    configs: dict[tuple, int] = {}
    for wl, size, b in catalog.baselines():
        key = (wl.name, size, b.dtype, b.gpus, b.gpu_type)
        configs[key] = configs.get(key, 0) + 1
    for wl, size, b in catalog.baselines():
        recipe = resolve(catalog, wl.name, size, b.dtype, b.gpus, b.gpu_type, release=b.release)
        step = baseline_step_s(recipe, b)
        if step is None:
            continue
        level = stated_recompute(recipe)
        if level is None:
            level = least_recompute_that_fits(recipe.model, recipe.derived, recipe.gpu, b.dtype).recompute
        several = configs[(wl.name, size, b.dtype, b.gpus, b.gpu_type)] > 1
        out.append(Sample(wl.name, recipe.size, b.dtype, b.gpus, recipe.gpu_type, step, recipe, level,
                          b.release, wl.framework_of(b.source), several))
    return out


def fingerprint(items: Iterable[Sample]) -> str:
    """A short hash of what a fit saw (rows, layouts and measured step times)."""
    text = "\n".join(
        f"{s.label} {s.recipe.layout.as_dict()} {s.measured_step_s:.6g} {s.recompute}"
        for s in sorted(items, key=lambda s: s.label)
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def predict_sample(sample: Sample, eff: Efficiency) -> float:
    r = sample.recipe
    return predict_step(r.model, r.derived, r.gpu, sample.dtype, eff, sample.recompute, r.tp_comm_overlap,
                        r.attention_backend).step_time_s


def _weights(items: list[Sample]) -> list[float]:
    per_table: dict[tuple[str, ...], int] = {}
    for s in items:
        per_table[s.table] = per_table.get(s.table, 0) + 1
    return [1.0 / per_table[s.table] for s in items]


def loss(items: list[Sample], eff: Efficiency) -> float:
    """Weighted mean squared log error of the predicted step times."""
    w = _weights(items)
    total = sum(wi * math.log(predict_sample(s, eff) / s.measured_step_s) ** 2 for s, wi in zip(items, w))
    return total / sum(w)


def prior_penalty(eff: Efficiency, n_tables: int) -> float:
    """The prior's share of the objective: ``(noise^2 / tables) x sum of z^2``, where z is
    each parameter's distance from its prior value in prior standard deviations (log space
    for fractions and the knee, linear for the overlap). With ``noise`` the typical error of
    one table (4 %), a parameter one standard deviation off costs as much as one table
    predicted 4 % off; the data dominate wherever they constrain a parameter."""
    z2 = 0.0
    for name, (center, sd) in PRIOR.items():
        value = getattr(eff, name)
        if BOUNDS[name][2] == "log":
            z2 += (math.log(value / center) / sd) ** 2
        else:
            z2 += ((value - center) / sd) ** 2
    return TABLE_NOISE**2 / max(1, n_tables) * z2


def objective(items: list[Sample], eff: Efficiency) -> float:
    """What :func:`fit` minimises: :func:`loss` plus :func:`prior_penalty`."""
    return loss(items, eff) + prior_penalty(eff, len({s.table for s in items}))


def fit(items: list[Sample], start: Efficiency = FIT_START,
        fixed: Mapping[str, float] | None = None) -> tuple[Efficiency, float]:
    """Coordinate descent (see the module docstring); returns the parameters and their
    :func:`loss` (the data term, without the prior). ``fixed`` holds parameters at given
    values (a measured value in place of a fitted one: the experiments the README reports)."""
    if not items:
        raise LlmbError("no baselines to calibrate on")
    fixed = dict(fixed or {})
    unknown = set(fixed) - set(BOUNDS)
    if unknown:
        raise LlmbError(f"not a fitted parameter: {', '.join(sorted(unknown))} (fitted: {', '.join(BOUNDS)})")
    current = replace(start, **fixed)
    best = objective(items, current)
    step = FIRST_STEP
    for _ in range(STEP_HALVINGS + 1):
        improved = True
        while improved:
            improved = False
            for name, (lo, hi, scale) in BOUNDS.items():  # the fitted parameters
                if name in fixed:
                    continue
                for direction in (1, -1):
                    while True:
                        value = getattr(current, name)
                        new = value * math.exp(direction * step) if scale == "log" else value + direction * step
                        new = min(hi, max(lo, new))
                        if new == value:
                            break
                        trial = replace(current, **{name: new})
                        trial_loss = objective(items, trial)
                        if trial_loss < best - 1e-12:
                            current, best, improved = trial, trial_loss, True
                        else:
                            break
        step /= 2
    current = _rounded(current)
    return current, loss(items, current)


def _rounded(eff: Efficiency) -> Efficiency:
    # Four significant digits: the stored file and a refit compare exactly.
    return Efficiency(**{k: float(f"{v:.4g}") for k, v in eff.as_dict().items()})


# ---------------------------------------------------------------------------------------------
# Naive baselines
# ---------------------------------------------------------------------------------------------


def achieved_mfu(sample: Sample) -> float:
    """MFU of the measured step under the megatron convention (dense peak of the run's dtype)."""
    r = sample.recipe
    return r.metrics(sample.measured_step_s, "megatron").mfu


def fit_constant_mfu(items: list[Sample]) -> float:
    w = _weights(items)
    return math.exp(sum(wi * math.log(achieved_mfu(s)) for s, wi in zip(items, w)) / sum(w))


def predict_constant_mfu(sample: Sample, mfu_value: float) -> float:
    r = sample.recipe
    work = flops_per_sample(r.model, "megatron") * r.layout.gbs
    return work / (r.gpus * r.peak_flops * mfu_value)


# ---------------------------------------------------------------------------------------------
# Cross-validation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOut:
    """One row's measured step time and each model's held-out prediction (seconds)."""

    sample: Sample
    calibrated_s: float
    constant_mfu_s: float
    roofline_s: float

    def error(self, model: str) -> float:
        """Signed relative error (predicted / measured - 1)."""
        return getattr(self, f"{model}_s") / self.sample.measured_step_s - 1.0


MODELS = ("calibrated", "constant_mfu", "roofline")
FAMILIES = ("all", "dense", "moe", "bf16", "fp8", "h100", "gb200", "nemo1", "nemo2", "megatron", "maxtext")


SCHEMES: dict[str, Callable[[Sample], Any]] = {
    "leave one workload out": lambda s: s.workload,
    "leave one GPU type out": lambda s: s.gpu_type,
    "leave one table out": lambda s: s.table,
}


def cross_validate(
    items: list[Sample],
    progress: Callable[[str], None] | None = None,
    scheme: str = "leave one workload out",
    fixed: Mapping[str, float] | None = None,
) -> list[HeldOut]:
    """Held-out predictions for every sample: each group of ``scheme`` (a workload, or one
    published table) is predicted by a fit on all the other groups (``fixed`` as for
    :func:`fit`)."""
    group_of = SCHEMES[scheme]
    roof = Efficiency.roofline()
    out: list[HeldOut] = []
    for wl in sorted({group_of(s) for s in items}):
        train = [s for s in items if group_of(s) != wl]
        test = [s for s in items if group_of(s) == wl]
        if progress:
            progress(f"fold {wl if isinstance(wl, str) else ' '.join(wl)}: fitting on {len(train)} rows")
        eff, _ = fit(train, fixed=fixed)
        mfu_value = fit_constant_mfu(train)
        for s in test:
            out.append(
                HeldOut(
                    sample=s,
                    calibrated_s=predict_sample(s, eff),
                    constant_mfu_s=predict_constant_mfu(s, mfu_value),
                    roofline_s=predict_sample(s, roof),
                )
            )
    return out


def summarize(held: list[HeldOut], bands: dict[str, tuple[float, float]] | None = None
              ) -> dict[str, dict[str, dict[str, float]]]:
    """``{family: {model: {n, mape, median, max, bias}}}`` in percent; with ``bands`` (the
    stored dense / MoE bands) the calibrated model also gets ``coverage``: the percentage of
    the family's held-out rows whose measured step time lies inside its forecast's band."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for fam in FAMILIES:
        rows = [h for h in held if fam in h.sample.families()]
        if not rows:
            continue
        table[fam] = {}
        for model in MODELS:
            errs = [100 * h.error(model) for h in rows]
            abs_errs = [abs(e) for e in errs]
            table[fam][model] = {
                "n": len(errs),
                "mape": sum(abs_errs) / len(errs),
                "median": median(abs_errs),
                "max": max(abs_errs),
                "bias": sum(errs) / len(errs),
            }
            if bands and model == "calibrated":
                inside = [in_band(h, bands) for h in rows]
                table[fam][model]["coverage"] = 100 * sum(inside) / len(inside)
    return table


def in_band(h: HeldOut, bands: dict[str, tuple[float, float]]) -> bool:
    """Whether the measured step time lies in the band of the held-out forecast: the
    forecast says ``predicted / (1 + hi) .. predicted / (1 + lo)``, i.e. an error in
    ``[lo, hi]``."""
    lo, hi = bands["moe" if h.sample.moe else "dense"]
    return lo <= h.error("calibrated") <= hi


def error_band(held: list[HeldOut], moe: bool) -> tuple[float, float]:
    """(low, high) signed held-out errors of the calibrated model bracketing ~90 % of the
    family's rows (5th and 95th percentile, nearest rank), as fractions."""
    errs = sorted(h.error("calibrated") for h in held if h.sample.moe == moe)
    if not errs:
        errs = sorted(h.error("calibrated") for h in held)
    lo = errs[max(0, math.ceil(0.05 * len(errs)) - 1)]
    hi = errs[min(len(errs) - 1, math.ceil(0.95 * len(errs)) - 1)]
    return lo, hi


# ---------------------------------------------------------------------------------------------
# The stored calibration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    efficiency: Efficiency
    fingerprint: str
    loss: float
    cv: dict[str, Any]
    cv_table: dict[str, Any]  # leave-one-table-out summary, same shape as ``cv``
    cv_gpu: dict[str, Any]  # leave-one-GPU-type-out summary, same shape as ``cv``
    bands: dict[str, tuple[float, float]]
    rows: tuple[dict[str, Any], ...]
    procedure: str

    def band(self, moe: bool) -> tuple[float, float]:
        lo, hi = self.bands["moe" if moe else "dense"]
        return lo, hi


def build(items: list[Sample], progress: Callable[[str], None] | None = None) -> Calibration:
    """Fit on every sample and cross-validate: everything ``calibration.json`` holds."""
    if progress:
        progress(f"fitting on all {len(items)} rows")
    eff, best = fit(items)
    held = cross_validate(items, progress)
    held_gpu = cross_validate(items, progress, "leave one GPU type out")
    held_table = cross_validate(items, progress, "leave one table out")
    by_table = {h.sample.label: h.calibrated_s for h in held_table}
    by_gpu = {h.sample.label: h.calibrated_s for h in held_gpu}
    bands = {"dense": error_band(held, False), "moe": error_band(held, True)}
    rows = tuple(
        {
            "row": h.sample.label,
            "recompute": h.sample.recompute,
            "measured_s": round(h.sample.measured_step_s, 4),
            "fitted_s": round(predict_sample(h.sample, eff), 4),
            **{f"held_out_{m}_s": round(getattr(h, f"{m}_s"), 4) for m in MODELS},
            "held_out_table_calibrated_s": round(by_table[h.sample.label], 4),
            "held_out_gpu_type_calibrated_s": round(by_gpu[h.sample.label], 4),
        }
        for h in held
    )
    return Calibration(
        efficiency=eff,
        fingerprint=fingerprint(items),
        loss=best,
        cv=summarize(held, bands),
        cv_table=summarize(held_table, bands),
        cv_gpu=summarize(held_gpu, bands),
        bands=bands,
        rows=rows,
        procedure=(__doc__ or "").split("Procedure", 1)[-1].strip(),
    )


def to_json(cal: Calibration) -> str:
    data = {
        "parameters": cal.efficiency.as_dict(),
        "fitted_on": {"catalog_fingerprint": cal.fingerprint, "rows": len(cal.rows)},
        "loss_mean_squared_log_error": cal.loss,
        "procedure": "llmb.plan.calibrate (module docstring); refit with `llmb calibrate --fit`",
        "cross_validation": {
            "scheme": "leave one workload out",
            "error_pct": cal.cv,
            "band_dense": list(cal.bands["dense"]),
            "band_moe": list(cal.bands["moe"]),
            "leave_one_table_out_error_pct": cal.cv_table,
            "leave_one_gpu_type_out_error_pct": cal.cv_gpu,
        },
        "rows": list(cal.rows),
    }
    return json.dumps(data, indent=1, sort_keys=False) + "\n"


def from_json(text: str) -> Calibration:
    try:
        data = json.loads(text)
        cv = data["cross_validation"]
        return Calibration(
            efficiency=Efficiency.from_dict(data["parameters"]),
            fingerprint=data["fitted_on"]["catalog_fingerprint"],
            loss=float(data["loss_mean_squared_log_error"]),
            cv=cv["error_pct"],
            cv_table=cv.get("leave_one_table_out_error_pct", {}),
            cv_gpu=cv.get("leave_one_gpu_type_out_error_pct", {}),
            bands={"dense": tuple(cv["band_dense"]), "moe": tuple(cv["band_moe"])},
            rows=tuple(data["rows"]),
            procedure=data["procedure"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LlmbError(f"{CALIBRATION_FILE} is malformed: {exc}") from None


@lru_cache(maxsize=1)
def stored_calibration() -> Calibration:
    """The calibration shipped with the package (read once per process)."""
    try:
        text = resources.files("llmb.plan").joinpath(CALIBRATION_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LlmbError(
            f"{CALIBRATION_FILE} is missing from the package; run `llmb calibrate --fit --write`"
        ) from None
    return from_json(text)


def stored_efficiency() -> Efficiency:
    """The calibrated efficiencies, or the uncalibrated defaults when no file is shipped."""
    try:
        return stored_calibration().efficiency
    except LlmbError:
        return FIT_START
