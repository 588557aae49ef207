"""From a parsed log to a measured run: window statistics plus the reference metrics.

Every derived number (tokens/s, TFLOP/s per GPU from the catalog's FLOPs, MFU, days per 1T
tokens, a step time implied by tokens/s) comes from :mod:`llmb.plan`; nothing is re-derived
here. A TFLOP/s per GPU the framework printed is reported as logged, beside the catalog's, and
preferred when it is plausible (positive and below the GPU's dense peak).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmb.catalog.loader import Catalog
from llmb.errors import LayoutError, LlmbError
from llmb.plan.metrics import step_time_from_tokens_per_s
from llmb.plan.recipe import Recipe, resolve
from llmb.plan.run import ResolvedRun
from llmb.records import CONFIG_FILE, SUMMARY_FILE, RunConfig, RunSummary
from llmb.results.identity import RunSpec, infer_spec
from llmb.results.parse import ParsedLog, check_format, log_files, parse_file
from llmb.results.stats import Window, WindowStats, covers, default_window, observed_window, window_stats


@dataclass(frozen=True)
class RunResult:
    """One analysed log: its steps, identity, window statistics and metrics."""

    parsed: ParsedLog
    spec: RunSpec
    stats: WindowStats
    recipe: Recipe | None = None
    #: the reference metrics at the window's mean step time (``None`` without a recipe)
    metrics: dict[str, Any] | None = None
    notes: tuple[str, ...] = field(default=())

    def as_dict(self, with_steps: bool = False) -> dict[str, Any]:
        p = self.parsed
        out: dict[str, Any] = {
            "path": p.path,
            "format": p.format,
            "rank": p.rank,
            "ranks": list(p.ranks),
            "run": self.spec.as_dict(),
            "gpu_type": self.recipe.gpu_type if self.recipe else self.spec.gpu_type,
            "status": self.stats.status.value,
            "window": str(self.stats.window),
            "reasons": list(self.stats.reasons),
            "steps_found": len(p.records),
            "last_iteration": p.records[-1].iteration if p.records else None,
            "progress": list(p.progress) if p.progress else None,
            "stats": {k: v.as_dict() for k, v in self.stats.metrics.items()},
            "metrics": self.metrics,
            "baseline": self.recipe.baseline.model_dump(mode="json") if self.recipe and self.recipe.baseline else None,
            "layout": self.recipe.layout.as_dict() if self.recipe else None,
            "lines": p.lines,
            "bytes": p.bytes,
            "notes": list(p.notes) + list(self.notes),
        }
        if with_steps:
            out["steps"] = [r.as_dict() for r in p.records]
        return out


ROW_FIELDS = (
    "path", "format", "workload", "size", "proxy", "dtype", "gpus", "gpu_type", "device", "status", "window", "present",
    "expected", "interval", "steps_found", "step_time_s", "step_time_std_s", "step_time_min_s", "step_time_max_s",
    "step_time_median_s", "tflops_per_gpu", "tflops_per_gpu_source", "tokens_per_s",
    "tokens_per_s_per_gpu", "mfu", "convention", "days_per_1t_tokens", "reasons",
)


def result_row(result: RunResult) -> dict[str, Any]:
    """A flat row (CSV and tables): window statistics of the step time, then the metrics."""
    p, s, spec, m = result.parsed, result.stats, result.spec, result.metrics or {}
    st = s.metrics.get("step_time_s")
    logged_tokens = s.mean("tokens_per_s")
    return {
        "path": p.path,
        "format": p.format,
        "workload": spec.workload,
        "size": spec.size,
        "proxy": spec.proxy,
        "dtype": spec.dtype or (result.recipe.dtype if result.recipe else None),
        "gpus": spec.gpus,
        "gpu_type": result.recipe.gpu_type if result.recipe else spec.gpu_type,
        "device": spec.device,
        "status": s.status.value,
        "window": str(s.window),
        "present": s.present,
        "expected": s.expected,
        "interval": s.interval,
        "steps_found": len(p.records),
        "step_time_s": m.get("step_time_s", st.mean if st else None),
        "step_time_std_s": st.std if st else None,
        "step_time_min_s": st.min if st else None,
        "step_time_max_s": st.max if st else None,
        "step_time_median_s": st.median if st else None,
        "tflops_per_gpu": m.get("tflops_per_gpu", s.mean("tflops_per_gpu")),
        "tflops_per_gpu_source": m.get("tflops_per_gpu_source", "log" if s.mean("tflops_per_gpu") is not None else None),
        "tokens_per_s": m.get("tokens_per_s", logged_tokens),
        "tokens_per_s_per_gpu": m.get("tokens_per_s_per_gpu", s.mean("tokens_per_s_per_gpu")),
        "mfu": m.get("mfu"),
        "convention": m.get("convention"),
        "days_per_1t_tokens": m.get("days_per_1t_tokens"),
        "reasons": "; ".join(s.reasons),
    }


def _final_reached(parsed: ParsedLog, planned: int | None) -> bool | None:
    if parsed.final_reached is not None:
        return parsed.final_reached
    if planned is None or not parsed.records or parsed.iteration_base is None:
        return None
    return parsed.records[-1].iteration >= planned - 1 + parsed.iteration_base


def analyze(
    parsed: ParsedLog,
    spec: RunSpec,
    catalog: Catalog,
    window: Window | None = None,
    convention: str = "recipe",
    recipe: Recipe | None = None,
) -> RunResult:
    """Window statistics for ``parsed`` and, when ``spec`` names a catalog recipe (or
    ``recipe`` is given, e.g. an llmb run's recorded one), its metrics."""
    notes: list[str] = []
    if recipe is not None:
        pass
    elif spec.proxy:
        # A proxy's model and layout are recorded in its folder, not in the catalog.
        notes.append(f"no metrics: the {spec.proxy} proxy's model is recorded in its experiment's config.json, "
                     "and options given here replace it")
    elif spec.workload and spec.size and spec.gpus:
        try:
            recipe = resolve(
                catalog, spec.workload, spec.size, spec.dtype, spec.gpus, spec.gpu_type, dict(spec.layout) or None
            )
        except LayoutError as exc:
            # A measured run at a scale the catalog cannot plan still has its statistics.
            notes.append(f"no metrics: {exc}")
        else:
            spec = replace(spec, workload=recipe.workload.name, size=recipe.size, dtype=recipe.dtype, gpu_type=recipe.gpu_type)
    elif spec.workload or spec.size or spec.gpus:
        missing = [n for n in ("workload", "size", "gpus") if getattr(spec, n) is None]
        notes.append(f"no metrics: give --{' --'.join(missing)} (or name the folder like llama3.1_8b_bf16_gpus8)")
    planned = parsed.planned_steps or (recipe.workload.max_steps if recipe else None)
    if window is None:
        window = default_window(planned)
        if parsed.records and not covers(window, parsed.records):
            # Not the recipe's run (an excerpt, a long run, a sparse log): the steps it has.
            window = observed_window(parsed.records)
            notes.append(f"window {window}: the logged steps after warm-up (the reference window "
                         f"{default_window(planned)} holds none of them)")
    stats = window_stats(parsed.records, window, _final_reached(parsed, planned))
    if stats.outliers:
        st = stats.metrics["step_time_s"]
        notes.append(
            f"step time outlier(s) in the window at iteration(s) {', '.join(map(str, stats.outliers[:6]))}"
            f"{' ...' if len(stats.outliers) > 6 else ''} (kept; window median {st.median:.4g} s, mean {st.mean:.4g} s)"
        )
    metrics = _metrics(stats, recipe, convention, notes) if recipe else None
    return RunResult(parsed, spec, stats, recipe, metrics, tuple(notes))


@dataclass(frozen=True)
class EngineRun:
    """What an llmb experiment folder records about its run (``config.json``)."""

    spec: RunSpec
    recipe: Recipe
    window: Window | None
    notes: tuple[str, ...] = ()


def engine_run(log_path: Path, catalog: Catalog) -> EngineRun | None:
    """The recorded identity, recipe (a proxy's own model and layout, and the MFU denominator
    the engine used, e.g. a measured CPU ceiling) and statistics window of an llmb run whose
    log sits in its experiment folder; ``None`` when there is no readable ``config.json`` of
    this llmb's record version."""
    folder = Path(log_path).parent
    try:
        config = RunConfig.read(folder / CONFIG_FILE)
        run = ResolvedRun.from_config(config, catalog)
    except LlmbError:
        return None
    spec = RunSpec(
        workload=config.workload,
        size=config.size,
        dtype=config.dtype,
        gpus=config.world_size,
        gpu_type=config.hardware.gpu_type,
        source="engine config",
        proxy=config.proxy,
        device=config.hardware.device or ("cpu" if config.proxy else None),
    )
    window = Window(config.stats_warmup_steps + 1, config.stats_warmup_steps + config.stats_window_steps)
    notes = []
    try:
        summary = RunSummary.read(folder / SUMMARY_FILE)
    except LlmbError:  # still running, or killed before it wrote one
        summary = None
    if summary is not None and not summary.timing_comparable:
        notes.append("profiled run: its step times include the profiler's overhead and are not comparable")
    if summary is not None and summary.status == "invalid":
        notes.append(f"the engine marked this run INVALID: {summary.invalid_reason or 'non-finite values'}")
    return EngineRun(spec, run.recipe, window, tuple(notes))


def analyze_logs(
    paths: list[str],
    *,
    spec: RunSpec,
    catalog: Catalog | None = None,
    window: Window | None = None,
    fmt: str | None = None,
    rank: int | None = None,
    convention: str = "recipe",
) -> list[RunResult]:
    """Parse and analyse every log named (folders are searched; inside folders, files with no
    step lines, such as sbatch scripts, are skipped). ``spec`` fields given win over what the
    folder names say."""
    from llmb.catalog import default_catalog

    check_format(fmt)
    catalog = catalog or default_catalog()
    explicit = {Path(p) for p in paths if not Path(p).is_dir()}
    results = []
    for path in log_files(paths):
        parsed = parse_file(path, fmt=fmt, rank=rank)
        if parsed.format is None and path not in explicit:
            continue
        engine = engine_run(path, catalog) if parsed.format == "llmb" else None
        if engine is not None:
            run = spec.merged_over(engine.spec)
            recipe = engine.recipe if run == engine.spec else None  # options given win
            result = analyze(parsed, run, catalog, window or engine.window, convention, recipe)
            results.append(replace(result, notes=result.notes + engine.notes))
            continue
        run = spec.merged_over(infer_spec(path, parsed.format, catalog))
        results.append(analyze(parsed, run, catalog, window, convention))
    if not results:
        raise LlmbError(f"no step lines of any known format in {', '.join(map(str, paths))}")
    return results


def _metrics(stats: WindowStats, recipe: Recipe, convention: str, notes: list[str]) -> dict[str, Any] | None:
    step = stats.mean("step_time_s")
    step_source = "log"
    if step is None:
        # torchtitan prints tokens/s per device, not a step time: let plan turn it into one.
        per_gpu = stats.mean("tokens_per_s_per_gpu")
        job = stats.mean("tokens_per_s")
        tokens = job if job is not None else (per_gpu * recipe.gpus if per_gpu is not None else None)
        if tokens is None or not tokens > 0:
            return None
        step = step_time_from_tokens_per_s(recipe.model.seq_len, recipe.layout.gbs, tokens)
        step_source = "tokens/s in the log"
    if not (math.isfinite(step) and step > 0):
        notes.append(f"no metrics: the window's mean step time is {step}")
        return None
    try:
        m = recipe.metrics(step, convention).as_dict()
    except LlmbError as exc:  # e.g. an unknown convention
        raise LlmbError(f"cannot compute metrics for {recipe.title}: {exc}") from None
    m["step_time_source"] = step_source
    m["tflops_per_gpu_catalog"] = m["tflops_per_gpu"]
    m["tflops_per_gpu_source"] = f"catalog FLOPs ({convention})"
    logged = stats.mean("tflops_per_gpu")
    m["tflops_per_gpu_logged"] = logged
    if logged is not None:
        if 0 < logged <= m["peak_tflops"]:
            m["tflops_per_gpu"] = logged
            m["tflops_per_gpu_source"] = "log"
        else:
            notes.append(
                f"logged TFLOP/s/GPU {logged:.1f} is implausible (not between 0 and the "
                f"{m['peak_tflops']:.0f} TFLOP/s peak); the catalog's FLOPs are used instead"
            )
    if m["mfu"] > 1:
        notes.append(
            f"MFU {m['mfu']:.0%} is impossible: the run is probably not {recipe.title} "
            "(check --workload/--size/--gpus)"
        )
    return m


_STAMP = re.compile(r"^\d{8}T\d{6}(\d{3})?Z$")  # llmb.launch.experiment.utc_stamp


def run_id_for(result: RunResult) -> str:
    """A stable id for a log: the experiment (or file) name plus a hash of its absolute path,
    so importing the same log again updates its run instead of adding one."""
    source = result.spec.source
    return run_id_for_log(Path(str(result.parsed.path)), source.split(" ", 1)[1] if source.startswith("folder ") else None)


def run_id_for_log(log_path: Path, name: str | None = None) -> str:
    """The run id of the log at ``log_path`` (what a launcher records before the log exists)."""
    path = Path(log_path).resolve()
    folder = path.parent
    if _STAMP.match(folder.name):  # llmb: experiments/<name>/<UTC timestamp>/
        name = f"{folder.parent.name}-{folder.name}"
    elif name is None:
        name = path.stem
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name)[:80]}-{digest}"


def store_row(result: RunResult, run_id: str, cluster: str | None = None, job_id: str | None = None) -> dict[str, Any]:
    """The job-store row of an analysed run."""
    row = result_row(result)
    path = Path(str(result.parsed.path)).resolve()
    started = None
    if _STAMP.match(path.parent.name):
        started = datetime.strptime(path.parent.name[:15], "%Y%m%dT%H%M%S").strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        finished = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except OSError:
        finished = None
    return {
        "run_id": run_id,
        "workload": row["workload"],
        "size": row["size"],
        "proxy": row["proxy"],
        "dtype": row["dtype"],
        "gpus": row["gpus"],
        "gpu_type": row["gpu_type"],
        "device": row["device"],
        "cluster": cluster,
        # The layout that ran: the recipe's, else at least the knobs the user named (so a
        # comparison can see that it is not the baseline's layout).
        "layout": result.recipe.layout.as_dict() if result.recipe else (dict(result.spec.layout) or None),
        "format": row["format"],
        "status": row["status"],
        "window": row["window"],
        "step_time_s": row["step_time_s"],
        "step_time_std_s": row["step_time_std_s"],
        "tokens_per_s": row["tokens_per_s"],
        "tflops_per_gpu": row["tflops_per_gpu"],
        "mfu": row["mfu"],
        "days_per_1t_tokens": row["days_per_1t_tokens"],
        "convention": row["convention"],
        "stats": result.stats.as_dict(),
        "metrics": result.metrics,
        "notes": list(result.stats.reasons) + list(result.parsed.notes) + list(result.notes),
        "log_path": str(path),
        "log_bytes": result.parsed.bytes,
        "started_at": started,
        "finished_at": finished,
        "job_id": job_id,
    }
