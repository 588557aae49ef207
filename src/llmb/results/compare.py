"""Comparing measured runs: against the catalog's published baselines, another run, or a saved
set of runs, and along a configuration's history.

The pass rule is the references': a run passes when its throughput is at least ``tolerance``
(95 % by default) of the reference's. Throughput is tokens/s when both sides have it, else the
inverse step-time ratio (the same configuration processes the same tokens per step).

Runs are job-store rows (dicts with ``workload``, ``size``, ``dtype``, ``gpus``, ``gpu_type``,
``step_time_s``, ``tokens_per_s``, ``mfu``, ``days_per_1t_tokens``, ``status``...); the
functions here are pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from llmb.catalog.loader import Catalog
from llmb.errors import LlmbError
from llmb.plan.recipe import Recipe, resolve

DEFAULT_TOLERANCE = 0.95
CONFIG_KEYS = ("workload", "size", "dtype", "gpus", "gpu_type")
#: metric, whether higher is better
ROWS = (("step_time_s", False), ("tokens_per_s", True), ("mfu", True), ("days_per_1t_tokens", False))


def config_of(run: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(run.get(k) for k in CONFIG_KEYS)


def config_label(run: dict[str, Any]) -> str:
    w, s, d, g, t = config_of(run)
    return f"{w or '?'} {s or '?'} {d or '?'} {g or '?'}x{t or '?'}"


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
    #: "PASS", "FAIL" or "N/A" (no reference, or nothing to compare)
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


def compare(run: dict[str, Any], ref: Reference | None, tolerance: float = DEFAULT_TOLERANCE) -> Comparison:
    """One run against one reference (``None``: no reference found)."""
    if not 0 < tolerance <= 10:
        raise LlmbError(f"tolerance must be a fraction such as 0.95, got {tolerance}")
    notes: list[str] = []
    rows = tuple(
        MetricRow(key, run.get(key), ref.get(key) if ref else None, _ratio(run.get(key), ref.get(key)) if ref else None)
        for key, _ in ROWS
    )
    same = ref is None or ref.config is None or ref.config == config_of(run)
    if not same:
        notes.append("the reference is another configuration: only tokens/s are comparable")
    tr = throughput_ratio(run, ref, same) if ref else None
    if ref is None:
        verdict = "N/A"
        notes.append("no reference for this configuration")
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


def baseline_reference(run: dict[str, Any], catalog: Catalog) -> Reference | None:
    """The catalog's published baseline for the run's configuration, if there is one.

    Missing published numbers are filled from the published step time through ``llmb.plan``.
    """
    if not (run.get("workload") and run.get("size") and run.get("gpus")):
        return None
    recipe = resolve(catalog, run["workload"], run["size"], run.get("dtype"), run["gpus"], run.get("gpu_type"))
    return recipe_baseline(recipe)


def recipe_baseline(recipe: Recipe) -> Reference | None:
    """A resolved recipe's published baseline as a :class:`Reference` (``None`` if none)."""
    b = recipe.baseline
    if b is None:
        return None
    derived = recipe.metrics(b.step_time_s) if b.step_time_s else None
    return Reference(
        label=f"baseline ({recipe.workload.sources[b.source].title or b.source})",
        step_time_s=b.step_time_s,
        tokens_per_s=b.tokens_per_s or (derived.tokens_per_s if derived else None),
        mfu=b.mfu_pct / 100 if b.mfu_pct else (derived.mfu if derived else None),
        days_per_1t_tokens=b.days_per_1t_tokens or (derived.days_per_1t_tokens if derived else None),
    )


def set_reference(run: dict[str, Any], members: list[dict[str, Any]], name: str) -> Reference | None:
    """The member of a saved set with the run's configuration (the newest if several)."""
    same = [m for m in members if config_of(m) == config_of(run) and m.get("run_id") != run.get("run_id")]
    if not same:
        return None
    return run_reference(same[-1], f"set {name}: run {same[-1]['run_id']}")


def compare_all(
    runs: list[dict[str, Any]],
    reference_for: Callable[[dict[str, Any]], Reference | None],
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[Comparison]:
    return [compare(r, reference_for(r), tolerance) for r in runs]


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
