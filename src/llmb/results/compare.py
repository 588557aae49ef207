"""Comparing measured runs: against the catalog's published baselines, the predictor, earlier
runs of the same configuration, another run, or a saved set of runs.

The pass rule is the references': a run passes when its throughput is at least ``tolerance``
(95 % by default) of the reference's. Throughput is tokens/s when both sides have it, else the
inverse step-time ratio (the same configuration processes the same tokens per step). A run and
a reference of different configurations (layout, dtype, GPU type, scale, proxy, device) are
NOT COMPARABLE, never PASS.

Which reference a run gets by default (:func:`default_reference`), first that applies:

1. the catalog's published baseline of its configuration;
2. the step-time predictor's forecast (``llmb predict``), for a catalog recipe the references
   did not publish (another scale or layout) on a GPU;
3. the median of the last :data:`HISTORY_RUNS` earlier OK runs of the same configuration (a
   regression check: CPU proxies, unknown workloads);
4. none: "no baseline", said in one line; one such run never fails the command.

Runs are job-store rows (dicts with ``workload``, ``size``, ``dtype``, ``gpus``, ``gpu_type``,
``step_time_s``, ``tokens_per_s``, ``mfu``, ``days_per_1t_tokens``, ``status``...); the
functions here are pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from llmb.catalog.loader import Catalog
from llmb.errors import LlmbError
from llmb.plan.recipe import Recipe, resolve

DEFAULT_TOLERANCE = 0.95
CONFIG_KEYS = ("workload", "size", "proxy", "dtype", "gpus", "gpu_type", "device")
#: earlier runs whose median step time a run without a baseline is checked against
HISTORY_RUNS = 5
#: layout knobs that make two runs of one workload, size, dtype and scale different configurations
LAYOUT_COMPARED = ("tp", "pp", "cp", "ep", "etp", "vp", "mbs", "gbs", "fsdp")
#: metric, whether higher is better
ROWS = (("step_time_s", False), ("tokens_per_s", True), ("mfu", True), ("days_per_1t_tokens", False))


def config_of(run: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(run.get(k) for k in CONFIG_KEYS)


def config_label(run: dict[str, Any]) -> str:
    w, s, p, d, g, t, device = config_of(run)
    size = f"{s}-{p}" if s and p else (s or "?")
    where = f"{g or '?'}x cpu" if device == "cpu" else f"{g or '?'}x{t or '?'}"
    return f"{w or '?'} {size} {d or '?'} {where}"


@dataclass(frozen=True)
class Reference:
    """What a run is measured against: a name and the same metrics as a run."""

    label: str
    step_time_s: float | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None
    days_per_1t_tokens: float | None = None
    #: the reference run's configuration (``None`` for a baseline of the run's own)
    config: tuple[Any, ...] | None = None
    #: why the run is not comparable with this reference (another layout, ...); None when it is
    mismatch: str | None = None
    #: the recipe release a published baseline is from
    release: str | None = None

    def get(self, key: str) -> float | None:
        return getattr(self, key)


@dataclass(frozen=True)
class MetricRow:
    metric: str
    measured: float | None
    reference: float | None
    #: measured / reference
    ratio: float | None


@dataclass(frozen=True)
class Comparison:
    run_id: str
    config: str
    status: str
    reference: str | None
    rows: tuple[MetricRow, ...]
    #: measured throughput / reference throughput
    throughput_ratio: float | None
    #: "PASS", "FAIL", "NOT COMPARABLE" (another configuration) or "N/A" (no reference, or
    #: nothing to compare)
    verdict: str
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def throughput_ratio(run: dict[str, Any], ref: Reference | dict[str, Any], same_config: bool = True) -> float | None:
    """Measured over reference throughput: tokens/s, else (same configuration only) the
    inverse step-time ratio."""
    r = _ratio(run.get("tokens_per_s"), ref.get("tokens_per_s"))
    if r is None and same_config:
        r = _ratio(ref.get("step_time_s"), run.get("step_time_s"))
    return r


def compare(run: dict[str, Any], ref: Reference | None, tolerance: float = DEFAULT_TOLERANCE,
            why_none: str | None = None) -> Comparison:
    """One run against one reference (``None``: no reference found, ``why_none`` says why)."""
    if not 0 < tolerance <= 10:
        raise LlmbError(f"tolerance must be a fraction such as 0.95, got {tolerance}")
    notes: list[str] = []
    rows = tuple(
        MetricRow(key, run.get(key), ref.get(key) if ref else None, _ratio(run.get(key), ref.get(key)) if ref else None)
        for key, _ in ROWS
    )
    mismatch = ref.mismatch if ref else None
    if ref is not None and mismatch is None and ref.config is not None and ref.config != config_of(run):
        mismatch = "the reference is another configuration (" + config_label(dict(zip(CONFIG_KEYS, ref.config))) + ")"
    tr = throughput_ratio(run, ref, mismatch is None) if ref else None
    if ref is None:
        verdict = "N/A"
        notes.append(why_none or "no reference for this configuration")
    elif mismatch is not None:
        verdict = "NOT COMPARABLE"
        notes.append(mismatch)
    elif tr is None:
        verdict = "N/A"
        notes.append("nothing to compare: no step time or tokens/s on one side")
    else:
        verdict = "PASS" if tr >= tolerance else "FAIL"
    if run.get("status") not in (None, "OK"):
        notes.append(f"run status is {run.get('status')}: its numbers may not be trustworthy")
        if verdict == "PASS":
            verdict = "FAIL"
    return Comparison(
        run_id=str(run.get("run_id")),
        config=config_label(run),
        status=str(run.get("status")),
        reference=ref.label if ref else None,
        rows=rows,
        throughput_ratio=tr,
        verdict=verdict,
        notes=tuple(notes),
    )


def run_reference(run: dict[str, Any], label: str | None = None) -> Reference:
    return Reference(
        label=label or f"run {run.get('run_id')}",
        step_time_s=run.get("step_time_s"),
        tokens_per_s=run.get("tokens_per_s"),
        mfu=run.get("mfu"),
        days_per_1t_tokens=run.get("days_per_1t_tokens"),
        config=config_of(run),
    )


def _catalog_recipe(run: dict[str, Any], catalog: Catalog, release: str | None = None
                    ) -> tuple[Recipe | None, str | None]:
    """The catalog recipe a run is an instance of (at its scale, with its layout), or why none."""
    if not (run.get("workload") and run.get("size") and run.get("gpus")):
        return None, "no baseline: the run names no workload, size and GPU count (--workload/--size/--gpus)"
    if run.get("proxy"):
        return None, f"no published baseline: a {run['proxy']} proxy of {run['workload']} {run['size']}"
    try:
        return resolve(catalog, run["workload"], run["size"], run.get("dtype"), int(run["gpus"]),
                       run.get("gpu_type"), release=release), None
    except (LlmbError, TypeError, ValueError) as exc:
        return None, f"no baseline: {exc}"


def _layout_mismatch(run: dict[str, Any], recipe: Recipe) -> str | None:
    layout = run.get("layout") or {}
    published = recipe.layout.as_dict()
    differ = [f"{k.upper()} {layout[k]} vs {published.get(k)}" for k in LAYOUT_COMPARED
              if layout.get(k) is not None and published.get(k) is not None and layout[k] != published[k]]
    if differ:
        return "the run's layout differs from the baseline's (" + ", ".join(differ) + ")"
    if run.get("device") == "cpu":
        return "the run ran on CPU; the baseline on " + recipe.gpu_type.upper()
    return None


def baseline_reference(run: dict[str, Any], catalog: Catalog, release: str | None = None) -> Reference | None:
    """The catalog's published baseline for the run's configuration, if there is one
    (marked with the mismatch when the run's layout or device differs from it)."""
    return baseline_for(run, catalog, release)[0]


def baseline_for(run: dict[str, Any], catalog: Catalog, release: str | None = None
                 ) -> tuple[Reference | None, str | None]:
    """(the published baseline, why there is none), of ``release`` or else the newest release
    published at the run's scale. Missing published numbers are filled from the published
    step time through ``llmb.plan``."""
    recipe, why = _catalog_recipe(run, catalog, release)
    if recipe is None:
        return None, why
    ref = recipe_baseline(recipe)
    if ref is None:
        return None, f"no published baseline for {recipe.title}"
    mismatch = _layout_mismatch(run, recipe)
    return (replace(ref, mismatch=mismatch) if mismatch else ref), None


def predicted_reference(run: dict[str, Any], catalog: Catalog) -> Reference | None:
    """The predictor's forecast for a catalog recipe run on GPUs (``llmb predict``), at the
    run's own layout; ``None`` for proxies, CPU runs and anything the catalog cannot plan."""
    from llmb.plan.calibrate import stored_calibration
    from llmb.plan.forecast import forecast

    if run.get("proxy") or run.get("device") == "cpu" or not (run.get("workload") and run.get("size") and run.get("gpus")):
        return None
    layout = {k: v for k, v in (run.get("layout") or {}).items() if k in LAYOUT_COMPARED and v is not None}
    try:
        recipe = resolve(catalog, run["workload"], run["size"], run.get("dtype"), int(run["gpus"]),
                         run.get("gpu_type"), layout or None)
        cal = stored_calibration()
        f = forecast(recipe, cal.efficiency, band=cal.band(recipe.model.moe is not None))
    except (LlmbError, TypeError, ValueError):
        return None
    m = f.metrics
    lo, hi = f.band_s
    return Reference(label=f"predicted (llmb predict: {f.step_time_s:.3f} s, band {lo:.3f}-{hi:.3f} s)",
                     step_time_s=f.step_time_s, tokens_per_s=m.tokens_per_s, mfu=m.mfu,
                     days_per_1t_tokens=m.days_per_1t_tokens)


def history_reference(run: dict[str, Any], stored: list[dict[str, Any]], n: int = HISTORY_RUNS) -> Reference | None:
    """The median of the last ``n`` earlier OK runs of the run's configuration (``stored``
    oldest first), as a reference; ``None`` without any."""
    key, when = config_of(run), run.get("finished_at") or run.get("imported_at") or ""
    ids = [r.get("run_id") for r in stored]
    if run.get("run_id") in ids:  # the store's order settles runs that finished in the same second
        before = stored[: ids.index(run.get("run_id"))]
    else:
        before = [r for r in stored if (r.get("finished_at") or r.get("imported_at") or "") <= when]
    earlier = [r for r in before if config_of(r) == key and r.get("run_id") != run.get("run_id")
               and r.get("status") == "OK" and r.get("step_time_s")]
    earlier = earlier[-n:]
    if not earlier:
        return None
    med = lambda k: _median([r[k] for r in earlier if r.get(k) is not None])  # noqa: E731
    return Reference(label=f"median of the last {len(earlier)} earlier OK run(s) of this configuration",
                     step_time_s=med("step_time_s"), tokens_per_s=med("tokens_per_s"), mfu=med("mfu"),
                     days_per_1t_tokens=med("days_per_1t_tokens"))


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def default_reference(run: dict[str, Any], catalog: Catalog, stored: list[dict[str, Any]],
                      release: str | None = None) -> tuple[Reference | None, str | None]:
    """The reference a run is judged against by default, and why there is none (see the
    module docstring for the order)."""
    ref, why = baseline_for(run, catalog, release)
    if ref is not None:
        return ref, None
    for candidate in (predicted_reference(run, catalog), history_reference(run, stored)):
        if candidate is not None:
            return candidate, None
    return None, (why or "no baseline") + "; no earlier OK run of this configuration to compare with"


def recipe_baseline(recipe: Recipe) -> Reference | None:
    """A resolved recipe's published baseline as a :class:`Reference` (``None`` if none)."""
    b = recipe.baseline
    if b is None:
        return None
    derived = recipe.metrics(b.step_time_s) if b.step_time_s else None
    return Reference(
        label=f"baseline ({recipe.workload.sources[b.source].title or b.source}; release {b.release})",
        step_time_s=b.step_time_s,
        tokens_per_s=b.tokens_per_s or (derived.tokens_per_s if derived else None),
        mfu=b.mfu_pct / 100 if b.mfu_pct else (derived.mfu if derived else None),
        days_per_1t_tokens=b.days_per_1t_tokens or (derived.days_per_1t_tokens if derived else None),
        release=b.release,
    )


def set_reference(run: dict[str, Any], members: list[dict[str, Any]], name: str) -> Reference | None:
    """The member of a saved set with the run's configuration (the newest if several)."""
    same = [m for m in members if config_of(m) == config_of(run) and m.get("run_id") != run.get("run_id")]
    if not same:
        return None
    return run_reference(same[-1], f"set {name}: run {same[-1]['run_id']}")


def compare_all(
    runs: list[dict[str, Any]],
    reference_for: Callable[[dict[str, Any]], Reference | tuple[Reference | None, str | None] | None],
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[Comparison]:
    """Each run against ``reference_for(run)``: a reference, or (reference, why none)."""
    out = []
    for r in runs:
        found = reference_for(r)
        ref, why = found if isinstance(found, tuple) else (found, None)
        out.append(compare(r, ref, tolerance, why))
    return out


@dataclass(frozen=True)
class HistoryEntry:
    run_id: str
    config: str
    when: str | None
    tokens_per_s: float | None
    step_time_s: float | None
    best_before: str | None
    #: throughput relative to the best earlier run of the configuration
    ratio: float | None
    regression: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def history(runs: list[dict[str, Any]], tolerance: float = DEFAULT_TOLERANCE) -> list[HistoryEntry]:
    """Each configuration's runs in time order (``runs`` must be oldest first), each against
    the best earlier OK run; a regression is a throughput below ``tolerance`` of that best."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    out = []
    for run in runs:
        key = config_of(run)
        prev = best.get(key)
        ratio = throughput_ratio(run, prev) if prev else None
        out.append(
            HistoryEntry(
                run_id=str(run.get("run_id")),
                config=config_label(run),
                when=run.get("finished_at") or run.get("imported_at"),
                tokens_per_s=run.get("tokens_per_s"),
                step_time_s=run.get("step_time_s"),
                best_before=str(prev["run_id"]) if prev else None,
                ratio=ratio,
                regression=ratio is not None and ratio < tolerance,
            )
        )
        if run.get("status") == "OK" and (prev is None or (throughput_ratio(run, prev) or 0) > 1):
            best[key] = run
    return out
