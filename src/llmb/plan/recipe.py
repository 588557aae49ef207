"""Resolve a request (workload, size, dtype, GPUs, GPU type, layout overrides) into a recipe:
the model constants, a validated layout, the published baseline at that scale, and FLOPs.

Scales the catalog does not list are weak-scaled the way the references scale: keep the model
parallel sizes and MBS of the nearest listed row and grow GBS in proportion to the GPUs (the
seeds keep GBS / GPUs constant within a table). Where that rule does not apply, the request is
refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from llmb.catalog.loader import Catalog
from llmb.catalog.schema import DTYPES, Baseline, GpuSpec, LayoutRow, ModelSpec, SizeSpec, Workload, newest_release
from llmb.errors import CatalogError, LayoutError
from llmb.plan.flops import CONVENTIONS, FlopsBreakdown, flops_breakdown
from llmb.plan.shapes import ParamCount, param_count
from llmb.plan.layout import LAYOUT_KNOBS, DerivedLayout, Layout, choose_pipeline_split, derive
from llmb.plan.metrics import RunMetrics, run_metrics

#: Planning beyond this many GPUs is a typo, not a cluster (the largest published run has 2,048).
MAX_GPUS = 1_000_000


@dataclass(frozen=True)
class Recipe:
    workload: Workload
    size: str
    dtype: str
    gpu_type: str
    gpu: GpuSpec
    model: ModelSpec
    layout: Layout
    derived: DerivedLayout
    row: LayoutRow | None
    baseline: Baseline | None
    overridden: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    #: (FLOP/s, label) used as the MFU denominator instead of the GPU's dense peak, e.g. the
    #: measured GEMM ceiling of a CPU run
    peak_override: tuple[float, str] | None = None
    #: the recipe release whose layout and baseline these are (None: the size names none)
    release: str | None = None

    @property
    def gpus(self) -> int:
        return self.layout.gpus

    @property
    def tp_comm_overlap(self) -> bool:
        """Whether the recipe overlaps TP communication with compute (its layout row says;
        a layout of llmb's own, not the catalog's, does)."""
        return self.row.tp_comm_overlap if self.row is not None else True

    @property
    def attention_backend(self) -> str:
        """Transformer Engine's attention kernels the recipe selects (its layout row says;
        a layout of llmb's own gets cuDNN's, the default)."""
        return self.row.attention_backend if self.row is not None else "cudnn"

    @property
    def framework(self) -> str:
        """The framework this recipe's published numbers were measured with: the baseline's
        source's, else that of a source of the same release, else the workload's (Grok-1's
        NeMo 1 releases and its NeMo 2 releases are one workload)."""
        wl = self.workload
        if self.baseline is not None:
            return wl.framework_of(self.baseline.source)
        if self.release is not None:
            for name, src in wl.sources.items():
                if src.release == self.release:
                    return wl.framework_of(name)
        return wl.framework

    @property
    def peak_flops(self) -> float:
        if self.peak_override is not None:
            return self.peak_override[0]
        return self.gpu.peak_flops(self.dtype)

    @property
    def peak_label(self) -> str:
        if self.peak_override is not None:
            return self.peak_override[1]
        return f"{self.gpu.name} dense {self.dtype.upper()} peak"

    def flops(self, convention: str = "recipe") -> FlopsBreakdown:
        return flops_breakdown(self.model, convention, self.workload.recipe_flops)

    def flops_per_sample(self, convention: str = "recipe") -> float:
        return self.flops(convention).total

    def params(self) -> ParamCount:
        return param_count(self.model)

    def metrics(self, step_time_s: float, convention: str = "recipe") -> RunMetrics:
        return run_metrics(
            step_time_s=step_time_s,
            seq_len=self.model.seq_len,
            gbs=self.layout.gbs,
            gpus=self.layout.gpus,
            flops_per_sample=self.flops_per_sample(convention),
            peak_flops=self.peak_flops,
            convention=convention,
        )

    @property
    def title(self) -> str:
        return f"{self.workload.name} {self.size} {self.dtype} on {self.gpus}x {self.gpu_type}"

    def as_dict(self) -> dict[str, Any]:
        params = self.params()
        return {
            "workload": self.workload.name,
            "size": self.size,
            "dtype": self.dtype,
            "gpu_type": self.gpu_type,
            "gpus": self.gpus,
            "listed": self.row is not None,
            "overridden": list(self.overridden),
            "notes": list(self.notes),
            "model": self.model.model_dump(mode="json"),
            "layout": self.layout.as_dict(),
            "derived": self.derived.as_dict(),
            "flops_per_sample": {c: self.flops(c).as_dict() for c in CONVENTIONS},
            "params": params.as_dict(),
            "peak_tflops": self.peak_flops / 1e12,
            "peak_label": self.peak_label,
            "release": self.release,
            "baseline": self.baseline.model_dump(mode="json") if self.baseline else None,
        }


def normalize_release(release: str) -> str:
    """``v25.02`` and ``25.02`` name the same release (the tags carry a ``v``)."""
    text = release.strip()
    return text[1:] if text[:1] in ("v", "V") and text[1:2].isdigit() else text


def check_release(workload: Workload, size: str, release: str | None) -> str | None:
    """``release`` normalized, or a one-line error naming the releases the size has."""
    if release is None:
        return None
    wanted = normalize_release(release)
    known = workload.releases(size)
    if wanted not in known:
        raise CatalogError(
            f"{workload.name} {size} has no release {release!r} (releases: {', '.join(known) or 'none'})"
        )
    return wanted


def baseline_at(spec: SizeSpec, gpu_type: str, dtype: str, gpus: int, release: str | None = None) -> Baseline | None:
    """The published baseline at one scale: of ``release``, or of the newest release that
    has one there."""
    found = [b for b in spec.baselines if b.gpu_type == gpu_type and b.dtype == dtype and b.gpus == gpus]
    if release is None:
        release = newest_release(b.release for b in found)
    return next((b for b in found if b.release == release), None)


def rows_of_release(rows: list[LayoutRow], release: str | None) -> list[LayoutRow]:
    """Layout rows that apply to ``release`` (rows bound to no release apply to every one)."""
    return [r for r in rows if not r.releases or release is None or release in r.releases]


def default_release(spec: SizeSpec, rows: list[LayoutRow], gpu_type: str, dtype: str, gpus: int) -> str | None:
    """The release a request without ``--release`` gets: the newest with a baseline at this
    scale, else the newest whose layout rows list this scale, else the newest of the table."""
    at = [b.release for b in spec.baselines if b.gpu_type == gpu_type and b.dtype == dtype and b.gpus == gpus]
    if at:
        return newest_release(at)
    listed = [rel for r in rows if r.gpus == gpus for rel in r.releases]
    return newest_release(listed) or newest_release(rel for r in rows for rel in r.releases)


def layout_from_row(row: LayoutRow) -> Layout:
    return Layout(
        gpus=row.gpus,
        tp=row.tp,
        pp=row.pp,
        cp=row.cp,
        ep=row.ep,
        etp=row.etp,
        vp=row.vp,
        mbs=row.mbs,
        gbs=row.gbs,
        fsdp=row.fsdp,
        embedding_in_pipeline_split=row.embedding_in_pipeline_split,
        loss_in_pipeline_split=row.loss_in_pipeline_split,
    )


def _weak_scale(rows: list[LayoutRow], gpus: int, label: str, allow_below: bool,
                layers_given: bool = False, gbs: int | None = None) -> tuple[LayoutRow, str]:
    """Extend a table of layout rows to ``gpus``; returns the row template and a note. A table
    whose rows change the layer count extends only with the layers given (``--layers``); one
    that changes GBS/GPUs only with the GBS given (``--gbs``)."""
    rows = sorted(rows, key=lambda r: r.gpus)
    if len({r.layers for r in rows}) > 1 and not layers_given:
        raise LayoutError(
            f"{label}: the published rows change the layer count with scale "
            f"({', '.join(f'{r.gpus} GPUs: {r.layers} layers' for r in rows)}); "
            f"no rule extends them to {gpus} GPUs (give --layers N to plan one anyway)"
        )
    if gpus < rows[0].gpus and not allow_below:
        raise LayoutError(
            f"{label}: published from {rows[0].gpus} GPUs up and not expected to fit on "
            f"{gpus}; give layout overrides (e.g. --tp/--pp) to plan it anyway"
        )
    below = [r for r in rows if r.gpus <= gpus]
    template = below[-1] if below else rows[0]
    if gbs is not None:
        scaled = template.model_copy(update={"gpus": gpus, "gbs": gbs, "published": type(template.published)()})
        return scaled, f"extended from the {template.gpus}-GPU row (GBS {gbs} given)"
    ratios = {Fraction(r.gbs, r.gpus) for r in rows}
    if len(ratios) > 1:
        raise LayoutError(
            f"{label}: the published rows do not keep GBS/GPUs constant, so there is no "
            f"weak-scaling rule for {gpus} GPUs (give --gbs N to plan one anyway)"
        )
    ratio = ratios.pop()
    gbs = ratio * gpus
    if gbs.denominator != 1:
        raise LayoutError(
            f"{label}: weak scaling keeps GBS = {ratio} x GPUs, which is not a whole number "
            f"at {gpus} GPUs"
        )
    scaled = template.model_copy(update={"gpus": gpus, "gbs": int(gbs), "published": type(template.published)()})
    note = f"weak-scaled from the {template.gpus}-GPU row (GBS = {ratio} x GPUs)"
    return scaled, note


def resolve(
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
    """Build a :class:`Recipe`; every user mistake raises a one-line :class:`LlmbError`.

    ``overrides`` are layout knobs (``tp`` ... ``gbs``, ``fsdp``) and ``layers``, the model's
    layer count as the published tables' Layers column gives it (proxies of 405B, Grok-1);
    ``pp_split`` how the layers split into pipeline chunks (:data:`~llmb.plan.layout.PP_SPLITS`);
    ``release`` the recipe release whose layout and baseline to use (default: the newest one
    published at that scale)."""
    wl = catalog.workload(workload)
    size_key, spec = catalog.size(wl, size)
    label_base = f"{wl.name} {size_key}"
    release = check_release(wl, size_key, release)

    dtype = (dtype or wl.default_dtype).lower()
    if dtype not in DTYPES:
        raise CatalogError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")

    listed_types = sorted({r.gpu_type for r in spec.layouts})
    if gpu_type is None:
        gkey = wl.default_gpu_type if wl.default_gpu_type in listed_types or not listed_types else listed_types[0]
    else:
        gkey = catalog.gpu_key(gpu_type)
    gpu = catalog.gpus[gkey]
    gpu.peak_flops(dtype)  # a clear error when this GPU has no such precision

    rows = [r for r in spec.layouts if r.gpu_type == gkey and dtype in r.dtypes]
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(overrides) - set(LAYOUT_KNOBS)
    if unknown:
        raise LayoutError(f"unknown layout knob(s): {', '.join(sorted(unknown))}")
    layers = overrides.get("layers")
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or layers <= 0):
        raise LayoutError(f"layers must be a positive whole number, got {layers!r}")

    notes: list[str] = []
    if not rows:
        have = sorted({(r.gpu_type, d) for r in spec.layouts for d in r.dtypes})
        have_text = ", ".join(f"{t} {d}" for t, d in have) or "none"
        raise CatalogError(f"{label_base} has no {dtype} layout on {gkey} (published: {have_text})")

    if release is not None and rows_of_release(rows, release):
        rows = rows_of_release(rows, release)
    if gpus is None:
        gpus = min(r.gpus for r in rows)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus <= 0:
        raise LayoutError(f"GPUs must be a positive whole number, got {gpus!r}")
    if gpus > MAX_GPUS:
        raise LayoutError(f"GPUs must be at most {MAX_GPUS:,} (the largest published run has 2,048), got {gpus:,}")

    if release is None:
        release = default_release(spec, rows, gkey, dtype, gpus)
    rows = rows_of_release(rows, release)
    label = f"{label_base} {dtype} on {gkey}"
    row = next((r for r in rows if r.gpus == gpus), None)
    template = row
    if row is None:
        template, note = _weak_scale(rows, gpus, label, allow_below=bool(overrides), layers_given=layers is not None,
                                     gbs=overrides.get("gbs"))
        notes.append(note)

    layout = layout_from_row(template)
    knobs = {k: v for k, v in overrides.items() if k != "layers"}
    if knobs:
        layout = replace(layout, **knobs)
    if overrides:
        notes.append("layout overridden: " + ", ".join(f"{k}={v}" for k, v in overrides.items()))

    model = spec.model.with_layers(template.layers) if template.layers else spec.model
    if template.seq_len:
        model = model.model_copy(update={"seq_len": template.seq_len})
    if layers is not None:
        model = model.with_layers(layers)
    layout, split_note = choose_pipeline_split(layout, model.layers, pp_split)
    if split_note:
        notes.append(split_note)
    derived = derive(layout, model)
    notes.extend(derived.warnings)

    published_layers = template.layers or spec.model.layers
    baseline = baseline_at(spec, gkey, dtype, gpus, release) if model.layers == published_layers else None
    return Recipe(
        workload=wl,
        size=size_key,
        dtype=dtype,
        gpu_type=gkey,
        gpu=gpu,
        model=model,
        layout=layout,
        derived=derived,
        row=row,
        baseline=baseline,
        overridden=tuple(overrides),
        notes=tuple(notes),
        release=release,
    )


def scales(workload: Workload, size: str, dtype: str | None = None, gpu_type: str | None = None) -> list[int]:
    """GPU counts the catalog lists for a size (optionally for one dtype and GPU type)."""
    spec = workload.sizes[size]
    return sorted(
        {
            r.gpus
            for r in spec.layouts
            if (dtype is None or dtype in r.dtypes) and (gpu_type is None or r.gpu_type == gpu_type)
        }
    )
