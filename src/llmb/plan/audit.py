"""Audit the published tables: recompute every derived number from the published step time
under the ``recipe`` FLOPs convention, and explain each mismatch when one change reproduces it.

A published number *matches* when it is within 0.2 % of the recomputed one, or when the
recomputed value rounds to it at the precision it was printed with (days printed as ``27`` for
26.71 are rounding, not an error). For a mismatch we try single changes — another peak from the
hardware table, another layer count or FLOPs convention, another column's GBS, GPU count or
step time, the step time implied by the row's own tokens/s — and report those that reproduce
the published figure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from llmb.catalog.loader import Catalog
from llmb.catalog.schema import Baseline, LayoutRow, SizeSpec, Workload
from llmb.plan.flops import CONVENTIONS, flops_per_sample
from llmb.plan.metrics import SECONDS_PER_DAY, TOKENS_1T

REL_TOLERANCE = 0.002


@dataclass(frozen=True)
class Inputs:
    """What a published derived number depends on."""

    step_time_s: float
    gbs: int
    gpus: int
    seq_len: int
    flops: float  # per sample
    peak_flops: float  # FLOP/s

    def tokens_per_s(self) -> float:
        return self.seq_len * self.gbs / self.step_time_s

    def mfu_pct(self) -> float:
        return 100 * self.gbs * self.flops / self.step_time_s / self.gpus / self.peak_flops

    def days(self) -> float:
        return TOKENS_1T / self.tokens_per_s() / SECONDS_PER_DAY

    def tflops_per_gpu(self) -> float:
        return self.gbs * self.flops / self.step_time_s / self.gpus / 1e12


METRICS: dict[str, Callable[[Inputs], float]] = {
    "tokens_per_s": Inputs.tokens_per_s,
    "mfu_pct": Inputs.mfu_pct,
    "days_per_1t_tokens": Inputs.days,
    "tflops_per_gpu": Inputs.tflops_per_gpu,
}


@dataclass(frozen=True)
class Check:
    workload: str
    size: str
    dtype: str
    gpu_type: str
    gpus: int
    metric: str
    published: float
    recomputed: float
    source: str
    causes: tuple[str, ...] = ()
    implied: tuple[tuple[str, float], ...] = ()  # what the published number implies, for mismatches

    @property
    def rel_error(self) -> float:
        return (self.published - self.recomputed) / self.recomputed

    @property
    def ok(self) -> bool:
        return agrees(self.published, self.recomputed)

    def as_dict(self) -> dict[str, object]:
        d = {**asdict(self), "rel_error": self.rel_error, "ok": self.ok}
        d["implied"] = dict(self.implied)
        d["causes"] = list(self.causes)
        return d


@dataclass(frozen=True)
class Pattern:
    low: float
    high: float
    checks: tuple[Check, ...]

    def describe(self) -> str:
        names = sorted({f"{c.workload} {c.size}" for c in self.checks})
        metrics = sorted({c.metric for c in self.checks})
        return (
            f"{len(self.checks)} numbers ({', '.join(metrics)}) of {', '.join(names)} all imply "
            f"{100 * (self.low - 1):+.2f} % to {100 * (self.high - 1):+.2f} % more FLOPs per sample than "
            "the recipe formula gives"
        )

    def as_dict(self) -> dict[str, object]:
        return {"flops_factor_low": self.low, "flops_factor_high": self.high,
                "count": len(self.checks), "description": self.describe()}


@dataclass
class AuditReport:
    checks: list[Check] = field(default_factory=list)
    rows: int = 0  # baseline rows audited
    layout_rows: int = 0

    @property
    def mismatches(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def patterns(self, min_size: int = 3, gap: float = 0.003) -> list[Pattern]:
        """Mismatches that share one FLOPs factor (within ``gap``): a systematic difference in
        how the source counted, rather than scattered typos."""
        found = sorted(
            (dict(c.implied)["flops_factor"], c) for c in self.mismatches if "flops_factor" in dict(c.implied)
        )
        clusters: list[list[tuple[float, Check]]] = []
        for factor, check in found:
            if clusters and factor - clusters[-1][-1][0] <= gap:
                clusters[-1].append((factor, check))
            else:
                clusters.append([(factor, check)])
        return [
            Pattern(
                low=cl[0][0],
                high=cl[-1][0],
                checks=tuple(c for _, c in cl),
            )
            for cl in clusters
            if len(cl) >= min_size
        ]

    def as_dict(self) -> dict[str, object]:
        return {
            "patterns": [p.as_dict() for p in self.patterns()],
            "baseline_rows": self.rows,
            "layout_rows": self.layout_rows,
            "numbers_checked": len(self.checks),
            "mismatches": [c.as_dict() for c in self.mismatches],
            "tolerance_rel": REL_TOLERANCE,
        }


def _decimals(value: float) -> int:
    text = repr(float(value))
    if "e" in text:
        return 6
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


def agrees(published: float, recomputed: float) -> bool:
    """Within the relative tolerance, or equal at the published precision."""
    if recomputed == 0:
        return published == 0
    if abs(published - recomputed) <= REL_TOLERANCE * abs(recomputed):
        return True
    half_unit = 0.5 * 10 ** (-_decimals(published))
    return abs(published - recomputed) <= half_unit * (1 + 1e-9)


def _row_for(size: SizeSpec, b: Baseline) -> LayoutRow | None:
    return next(
        (r for r in size.layouts if r.gpu_type == b.gpu_type and b.dtype in r.dtypes and r.gpus == b.gpus
         and (not r.releases or b.release in r.releases)),
        None,
    )


def _alternatives(
    catalog: Catalog, wl: Workload, size: SizeSpec, b: Baseline, row: LayoutRow, base: Inputs
) -> Iterator[tuple[str, Inputs]]:
    """Single-change variants of ``base``, each with a sentence naming the change."""
    gpu = catalog.gpus[b.gpu_type]
    # Another peak.
    for key, spec in catalog.gpus.items():
        for dtype, tflops in spec.peak_tflops.items():
            peak = tflops * 1e12
            if peak != base.peak_flops:
                where = "" if key == b.gpu_type else f" {spec.name}"
                yield (
                    f"divides by the{where} {dtype.upper()} peak ({tflops:g} TFLOP/s) instead of "
                    f"{b.dtype.upper()} {gpu.peak_tflops[b.dtype]:g}",
                    Inputs(**{**asdict(base), "peak_flops": peak}),
                )
    # Another model constant or FLOPs count.
    model = size.model.with_layers(row.layers) if row.layers else size.model
    for delta in (-4, -3, -2, -1, 1, 2, 3, 4):
        layers = model.layers + delta
        if layers > 0:
            flops = flops_per_sample(model.with_layers(layers), "recipe", wl.recipe_flops)
            yield (
                f"counts {layers} layers instead of {model.layers} in the FLOPs",
                Inputs(**{**asdict(base), "flops": flops}),
            )
    if row.layers and row.layers != size.model.layers:
        flops = flops_per_sample(size.model, "recipe", wl.recipe_flops)
        yield (
            f"uses the full model's {size.model.layers} layers instead of this row's {row.layers}",
            Inputs(**{**asdict(base), "flops": flops}),
        )
    for convention in CONVENTIONS:
        if convention != "recipe":
            yield (
                f"counts FLOPs under the {convention} convention",
                Inputs(**{**asdict(base), "flops": flops_per_sample(model, convention, wl.recipe_flops)}),
            )
    if size.published_flops_per_sample:
        yield (
            f"uses the rounded {size.published_flops_per_sample:.3g} FLOPs per sample",
            Inputs(**{**asdict(base), "flops": size.published_flops_per_sample}),
        )
    # Another column's numbers.
    peers = [r for r in size.layouts if r.gpu_type == b.gpu_type and b.dtype in r.dtypes and r is not row]
    for r in peers:
        yield (f"uses GBS {r.gbs} (the {r.gpus}-GPU column's)", Inputs(**{**asdict(base), "gbs": r.gbs}))
        yield (f"uses {r.gpus} GPUs (another column)", Inputs(**{**asdict(base), "gpus": r.gpus}))
    for other in size.baselines:
        if (other is not b and other.gpu_type == b.gpu_type and other.dtype == b.dtype and other.step_time_s
                and other.release == b.release):
            yield (
                f"uses the {other.gpus}-GPU column's step time ({other.step_time_s:g} s)",
                Inputs(**{**asdict(base), "step_time_s": other.step_time_s}),
            )
    if b.tokens_per_s and b.step_time_s:
        implied = base.seq_len * base.gbs / b.tokens_per_s
        yield (
            f"was computed from a step time of {implied:.4g} s (the one the row's tokens/s implies), "
            f"not the printed {b.step_time_s:g} s",
            Inputs(**{**asdict(base), "step_time_s": implied}),
        )


def _implied(metric: str, published: float, recomputed: float, base: Inputs) -> tuple[tuple[str, float], ...]:
    """The one input value that would reproduce ``published`` exactly, for each free input."""
    ratio = published / recomputed
    if metric == "mfu_pct":
        return (("peak_tflops", base.peak_flops / ratio / 1e12), ("flops_factor", ratio))
    if metric == "tflops_per_gpu":
        return (("flops_factor", ratio),)
    if metric == "tokens_per_s":
        return (("step_time_s", base.step_time_s / ratio),)
    if metric == "days_per_1t_tokens":
        return (("tokens_per_s", base.tokens_per_s() / ratio),)
    return ()


def audit_catalog(catalog: Catalog) -> AuditReport:
    """Recompute every published derived number in the catalog."""
    report = AuditReport()
    for wl in catalog.workloads.values():
        for size_name, size in wl.sizes.items():
            report.layout_rows += len(size.layouts)
            if size.published_flops_per_sample:
                ours = flops_per_sample(size.model, "recipe", wl.recipe_flops)
                report.checks.append(
                    Check(wl.name, size_name, "-", "-", 0, "flops_per_sample",
                          size.published_flops_per_sample, ours, next(iter(wl.sources)))
                )
            for b in size.baselines:
                row = _row_for(size, b)
                if row is None:
                    continue  # the catalog's own validation reports baselines without layouts
                report.rows += 1
                model = size.model.with_layers(row.layers) if row.layers else size.model
                if row.seq_len:
                    model = model.model_copy(update={"seq_len": row.seq_len})
                step = b.step_time_s
                if step is None and b.tokens_per_s_per_gpu:
                    step = model.seq_len * row.gbs / (b.tokens_per_s_per_gpu * b.gpus)
                if step is None:
                    continue
                base = Inputs(
                    step_time_s=step,
                    gbs=row.gbs,
                    gpus=b.gpus,
                    seq_len=model.seq_len,
                    flops=flops_per_sample(model, "recipe", wl.recipe_flops),
                    peak_flops=catalog.gpus[b.gpu_type].peak_flops(b.dtype),
                )
                for metric, fn in METRICS.items():
                    published = getattr(b, metric)
                    if published is None:
                        continue
                    recomputed = fn(base)
                    causes: tuple[str, ...] = ()
                    implied: tuple[tuple[str, float], ...] = ()
                    if not agrees(published, recomputed):
                        causes = tuple(
                            text
                            for text, alt in _alternatives(catalog, wl, size, b, row, base)
                            if agrees(published, fn(alt))
                        )
                        implied = _implied(metric, published, recomputed, base)
                    report.checks.append(
                        Check(wl.name, size_name, b.dtype, b.gpu_type, b.gpus, metric,
                              published, recomputed, b.source, causes, implied)
                    )
    return report
