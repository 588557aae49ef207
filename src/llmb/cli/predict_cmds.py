"""Prediction commands: predict, search, calibrate (thin layers over llmb.plan)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer

from llmb.cli.app import JSON_OPTION, app, console, err_console, print_json

if TYPE_CHECKING:  # the planning modules load when a command runs, not at CLI start-up
    from rich.table import Table

    from llmb.plan.forecast import Forecast
    from llmb.plan.recipe import Recipe

# Kept in step with llmb.plan.forecast.RECOMPUTE_CHOICES (a test checks they agree).
RECOMPUTE_CHOICES: tuple[str, ...] = ("auto", "none", "selective", "mlp", "save_qkv", "full")
GB = 1e9

SIZE = typer.Option(..., "--size", "-s", help="Model size, e.g. 8b, 70b, 405b.")
DTYPE = typer.Option(None, "--dtype", "-d", help="bf16 or fp8 (default: the workload's).")
GPUS = typer.Option(None, "--gpus", "-n", help="Number of GPUs (default: the smallest listed scale).")
GPU_TYPE = typer.Option(None, "--gpu-type", "-g", help="h100, h200, b200, gb200, a100.")


def _recipe(workload: str, size: str, dtype: str | None, gpus: int | None, gpu_type: str | None,
            pp_split: str = "auto", release: str | None = None, **knobs: int | None) -> Recipe:
    from llmb.catalog import default_catalog
    from llmb.plan.forecast import resolve_on_gpu

    return resolve_on_gpu(default_catalog(), workload, size, dtype, gpus, gpu_type, knobs, pp_split, release)


RELEASE = typer.Option(None, "--release", help="Recipe release of the layout and baseline (default: the newest).")


def _band(recipe: Recipe) -> tuple[float, float]:
    from llmb.plan.calibrate import stored_calibration

    return stored_calibration().band(recipe.model.moe is not None)


def _layout_text(f: Forecast) -> str:
    lay, d = f.recipe.layout, f.recipe.derived
    parts = [f"TP{lay.tp}", f"PP{lay.pp}", f"CP{lay.cp}"]
    if lay.ep > 1:
        parts.append(f"EP{lay.ep} ETP{d.etp}")
    if d.vp > 1:
        parts.append(f"VP{d.vp}")
    if lay.fsdp:
        parts.append(f"FSDP{lay.fsdp}")
    parts += [f"DP{d.dp}", f"MBS{lay.mbs}", f"GBS{lay.gbs}", f"GA{d.ga}"]
    return " ".join(parts)


def _print_forecast(f: Forecast) -> None:
    from rich.table import Table

    r = f.recipe
    m = f.metrics
    mem = f.memory
    attention = "  attention=flash-attn" if r.attention_backend == "flash" else ""
    console.print(f"[bold]{r.title}[/]  {_layout_text(f)}  recompute={f.breakdown.recompute}{attention}")
    for note in r.notes:
        console.print(f"  note: {note}", highlight=False)

    mt = Table(title="Memory per GPU (worst pipeline rank)", title_justify="left")
    mt.add_column("part")
    mt.add_column("GB", justify="right")
    w = mem.worst
    for name, value in (
        ("weights", w.weights_bytes),
        ("gradients", w.grads_bytes),
        ("optimizer state", w.optimizer_bytes),
        (f"activations ({w.in_flight:g} in flight)", w.activations_bytes),
        ("logits", w.logits_bytes),
        ("peak allocated", mem.peak_allocated_bytes),
        ("runtime overhead", mem.runtime_overhead_bytes),
        ("total", mem.total_bytes),
        ("capacity", mem.capacity_bytes),
    ):
        mt.add_row(name, f"{value / GB:.1f}")
    console.print(mt)
    verdict = "[green]fits[/]" if mem.fits else "[red]does NOT fit[/]"
    console.print(f"  {verdict} (headroom {mem.headroom_bytes / GB:+.1f} GB)")

    bt = Table(title="Step time breakdown (slowest stage)", title_justify="left")
    bt.add_column("part")
    bt.add_column("s", justify="right")
    bt.add_column("share", justify="right")
    b = f.breakdown
    total = b.step_time_s
    for name, value in (
        ("GEMMs", b.gemm_s),
        ("attention", b.attention_s),
        ("element-wise", b.elementwise_s),
        ("TP comm (exposed)", b.tp_comm_s),
        ("CP comm (exposed)", b.cp_comm_s),
        ("EP all-to-all (exposed)", b.ep_comm_s),
        ("PP p2p (exposed)", b.pp_comm_s),
        ("FSDP comm (exposed)", b.fsdp_comm_s),
        ("pipeline bubble", b.bubble_s),
        ("DP comm (exposed)", b.dp_comm_s),
        ("optimizer", b.optimizer_s),
    ):
        if value > 0:
            bt.add_row(name, f"{value:.3f}", f"{100 * value / total:.1f}%")
    bt.add_row("[bold]step[/]", f"[bold]{total:.3f}[/]", "100%")
    console.print(bt)

    lo, hi = f.band_s
    rt = Table(title="Throughput", title_justify="left")
    rt.add_column("metric")
    rt.add_column("predicted", justify="right")
    measured = f.measured_step_s
    if measured is not None:
        rt.add_column(f"published ({r.baseline.release})" if r.baseline else "published", justify="right")
    pub = r.metrics(measured) if measured is not None else None

    def row(name: str, pred: str, published: str | None) -> None:
        rt.add_row(name, pred, *([published or "-"] if measured is not None else []))

    row("step time (s)", f"{m.step_time_s:.3f} [{lo:.2f}-{hi:.2f}]", f"{measured:.3f}" if pub else None)
    row("tokens/s", f"{m.tokens_per_s:,.0f}", f"{pub.tokens_per_s:,.0f}" if pub else None)
    row("tokens/s/GPU", f"{m.tokens_per_s_per_gpu:,.0f}", f"{pub.tokens_per_s_per_gpu:,.0f}" if pub else None)
    row("TFLOP/s/GPU (recipe)", f"{m.tflops_per_gpu:.0f}", f"{pub.tflops_per_gpu:.0f}" if pub else None)
    row(f"MFU (recipe, {m.peak_tflops:g} TF peak)", f"{100 * m.mfu:.1f}%", f"{100 * pub.mfu:.1f}%" if pub else None)
    mfu_meg = r.metrics(m.step_time_s, "megatron").mfu
    row("MFU (megatron)", f"{100 * mfu_meg:.1f}%", f"{100 * r.metrics(measured, 'megatron').mfu:.1f}%" if pub else None)
    row("days per 1T tokens", f"{m.days_per_1t_tokens:.2f}", f"{pub.days_per_1t_tokens:.2f}" if pub else None)
    console.print(rt)
    if measured is not None:
        console.print(f"  predicted vs published step time: {100 * (m.step_time_s / measured - 1):+.1f}%")
    console.print(
        "  band: step times of ~90 % of held-out calibration rows of this family "
        "(leave-one-workload-out) fell within it"
    )


@app.command("predict")
def predict_cmd(
    workload: str = typer.Argument(..., help="Workload name or alias (see `llmb list`)."),
    size: str = SIZE,
    dtype: Optional[str] = DTYPE,
    gpus: Optional[int] = GPUS,
    gpu_type: Optional[str] = GPU_TYPE,
    tp: Optional[int] = typer.Option(None, "--tp", help="Tensor parallel size."),
    pp: Optional[int] = typer.Option(None, "--pp", help="Pipeline parallel size."),
    cp: Optional[int] = typer.Option(None, "--cp", help="Context parallel size."),
    ep: Optional[int] = typer.Option(None, "--ep", help="Expert parallel size."),
    etp: Optional[int] = typer.Option(None, "--etp", help="Expert tensor parallel size."),
    vp: Optional[int] = typer.Option(None, "--vp", help="Virtual pipeline stages per rank."),
    mbs: Optional[int] = typer.Option(None, "--mbs", help="Micro-batch size."),
    gbs: Optional[int] = typer.Option(None, "--gbs", help="Global batch size."),
    fsdp: Optional[int] = typer.Option(None, "--fsdp", help="FSDP sharding group size."),
    layers: Optional[int] = typer.Option(None, "--layers", help="Transformer layers (the tables' Layers column)."),
    pp_split: str = typer.Option("auto", "--pp-split", help="Pipeline split: account, plain or auto."),
    release: Optional[str] = RELEASE,
    recompute: str = typer.Option(
        "auto", "--recompute", help=f"{' / '.join(RECOMPUTE_CHOICES)} (auto: the lightest that fits)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Predict memory per GPU, step time (with a breakdown), MFU, tokens/s and days per 1T tokens."""
    from llmb.plan.calibrate import stored_calibration
    from llmb.plan.forecast import forecast

    recipe = _recipe(workload, size, dtype, gpus, gpu_type, pp_split, release, tp=tp, pp=pp, cp=cp, ep=ep, etp=etp, vp=vp,
                     mbs=mbs, gbs=gbs, fsdp=fsdp, layers=layers)
    cal = stored_calibration()
    f = forecast(recipe, cal.efficiency, recompute, _band(recipe))
    if as_json:
        print_json({**f.as_dict(), "calibration": cal.fingerprint})
        return
    _print_forecast(f)


@app.command("search")
def search_cmd(
    workload: str = typer.Argument(..., help="Workload name or alias (see `llmb list`)."),
    size: str = SIZE,
    dtype: Optional[str] = DTYPE,
    gpus: Optional[int] = GPUS,
    gpu_type: Optional[str] = GPU_TYPE,
    gbs: Optional[int] = typer.Option(None, "--gbs", help="Global batch size (default: the recipe's)."),
    layers: Optional[int] = typer.Option(None, "--layers", help="Transformer layers (the tables' Layers column)."),
    release: Optional[str] = RELEASE,
    top: int = typer.Option(5, "--top", "-k", help="How many layouts to show."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Enumerate valid layouts, rank those that fit by predicted throughput, and compare the
    best with the recipe's own layout."""
    if top <= 0:
        raise typer.BadParameter(f"--top must be positive, got {top}")
    from rich.table import Table

    from llmb.plan.calibrate import stored_calibration
    from llmb.plan.search import explain, search_layouts

    recipe = _recipe(workload, size, dtype, gpus, gpu_type, release=release, gbs=gbs, layers=layers)
    cal = stored_calibration()
    res = search_layouts(recipe, cal.efficiency, top, _band(recipe))
    ref = res.recipe_forecast
    if as_json:
        print_json(
            {
                "recipe": ref.as_dict(),
                "tried": res.tried,
                "valid": res.valid,
                "fitting": res.fitting,
                "ranked": [f.as_dict() for f in res.ranked],
                "explanation": explain(res.ranked[0], ref) if res.ranked else [],
            }
        )
        return
    console.print(
        f"[bold]{recipe.title}[/]: {res.tried} layouts tried, {res.valid} valid, {res.fitting} fit in memory"
    )
    t = Table(title_justify="left")
    for col in ("#", "layout", "recompute", "step s", "tokens/s/GPU", "MFU", "memory GB"):
        t.add_column(col, justify="right" if col not in ("layout", "recompute") else "left")
    rows = list(enumerate(res.ranked, 1)) + [("recipe", ref)]
    for rank, f in rows:
        m = f.metrics
        t.add_row(
            str(rank),
            _layout_text(f),
            f.breakdown.recompute,
            f"{f.step_time_s:.3f}",
            f"{m.tokens_per_s_per_gpu:,.0f}",
            f"{100 * m.mfu:.1f}%",
            f"{f.memory.total_bytes / GB:.1f}" + ("" if f.memory.fits else " (no fit)"),
        )
    console.print(t)
    if not res.ranked:
        console.print("no layout fits in memory")
        return
    best = res.ranked[0]
    gain = 100 * (ref.step_time_s / best.step_time_s - 1)
    console.print(f"winner vs the recipe's layout: {gain:+.1f}% predicted throughput")
    for line in explain(best, ref):
        console.print(f"  {line}", highlight=False)
    if ref.measured_step_s is not None:
        console.print(f"  recipe layout: predicted {ref.step_time_s:.3f} s, published {ref.measured_step_s:.3f} s")
    lo, hi = stored_calibration().band(recipe.model.moe is not None)
    console.print(
        f"  differences below the calibration band ({100 * lo:+.0f}% .. {100 * hi:+.0f}%) are within the model's error"
    )


def _cv_table(cv: dict[str, dict[str, dict[str, float]]], title: str) -> Table:
    from rich.table import Table

    from llmb.plan.calibrate import MODELS

    t = Table(title=title, title_justify="left")
    coverage = any("coverage" in m for by_model in cv.values() for m in by_model.values())
    for col in ("family", "n", "model", "MAPE", "median", "max", "bias", *(("in band",) if coverage else ())):
        t.add_column(col, justify="left" if col in ("family", "model") else "right")
    for fam, by_model in cv.items():
        for i, model in enumerate(MODELS):
            s = by_model[model]
            t.add_row(
                fam if i == 0 else "",
                str(int(s["n"])) if i == 0 else "",
                model,
                f"{s['mape']:.1f}",
                f"{s['median']:.1f}",
                f"{s['max']:.1f}",
                f"{s['bias']:+.1f}",
                *((f"{s['coverage']:.0f}%" if "coverage" in s else "",) if coverage else ()),
                end_section=i == len(MODELS) - 1,
            )
    return t


#: A parameter that loses at least this share of its information without a workload is, in
#: effect, unidentified without it (the issue's "no parameter that only one workload informs").
RESTS_ON = 0.9


def _identification_table(lost: dict[str, dict[str, float]], eff) -> Table:
    from rich.table import Table

    from llmb.plan.calibrate import BOUNDS

    groups = sorted({g for by_group in lost.values() for g in by_group})
    t = Table(title="Share of each parameter's information lost without each workload (1: it rests on that "
              "workload alone)", title_justify="left")
    t.add_column("parameter")
    for g in groups:
        t.add_column(g, justify="right")
    for name, by_group in lost.items():
        lo, hi, _ = BOUNDS[name]
        label = name + (" (at its bound)" if getattr(eff, name) in (lo, hi) else "")
        t.add_row(label, *(f"[bold]{by_group[g]:.2f}[/bold]" if by_group[g] >= RESTS_ON else f"{by_group[g]:.2f}"
                           for g in groups))
    return t


@app.command("calibrate")
def calibrate_cmd(
    fit: bool = typer.Option(False, "--fit", help="Refit and cross-validate now (several minutes)."),
    write: bool = typer.Option(False, "--write", help="With --fit: store the result in the package."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show the calibrated efficiencies and their cross-validated errors (refit with --fit)."""
    from rich.table import Table

    from llmb.catalog import default_catalog
    from llmb.plan import calibrate as cal_mod
    from llmb.plan.calibrate import stored_calibration

    if write and not fit:
        raise typer.BadParameter("--write needs --fit")
    from llmb.errors import LlmbError

    try:
        stored = stored_calibration()
    except LlmbError:
        if not fit:
            raise
        stored = None  # refitting is how a missing or broken file is repaired
    cal = stored
    items = cal_mod.samples(default_catalog())
    if fit:
        cal = cal_mod.build(items, progress=None if as_json else lambda msg: err_console.print(msg))
        if write:
            from importlib import resources

            path = resources.files("llmb.plan").joinpath(cal_mod.CALIBRATION_FILE)
            with resources.as_file(path) as p:
                p.write_text(cal_mod.to_json(cal), encoding="utf-8")
            stored_calibration.cache_clear()
    from llmb.plan.identification import information_lost, jacobian

    jac = jacobian(items, cal.efficiency)  # the same for every grouping of the rows
    lost = information_lost(items, cal.efficiency, jac=jac)
    needs = {name: [g for g, v in by_group.items() if v >= RESTS_ON] for name, by_group in lost.items()}
    needs = {name: groups for name, groups in needs.items() if groups}
    if as_json:
        print_json(
            {
                "parameters": cal.efficiency.as_dict(),
                "identification": {
                    "information_lost_without": lost,
                    "unidentified_without": needs,
                    "information_lost_without_gpu_type": information_lost(items, cal.efficiency,
                                                                          lambda s: s.gpu_type, jac),
                },
                "fingerprint": cal.fingerprint,
                "loss": cal.loss,
                "cross_validation": cal.cv,
                "cross_validation_leave_one_table_out": cal.cv_table,
                "cross_validation_leave_one_gpu_type_out": cal.cv_gpu,
                "bands": cal.bands,
                "matches_stored": stored is not None and cal.efficiency == stored.efficiency,
                "rows": list(cal.rows),
            }
        )
        return
    pt = Table(title=f"Efficiencies (catalog fingerprint {cal.fingerprint})", title_justify="left")
    pt.add_column("parameter")
    pt.add_column("value", justify="right")
    if fit and stored is not None:
        pt.add_column("stored", justify="right")
    for k, v in cal.efficiency.as_dict().items():
        pt.add_row(k, f"{v:.4g}", *([f"{stored.efficiency.as_dict()[k]:.4g}"] if fit and stored is not None else []))
    console.print(pt)
    console.print(_cv_table(cal.cv, "Leave-one-workload-out error of predicted step time (%) - headline"))
    if cal.cv_gpu:
        console.print(_cv_table(cal.cv_gpu, "Leave-one-GPU-type-out error of predicted step time (%)"))
    if cal.cv_table:
        console.print(_cv_table(cal.cv_table, "Leave-one-table-out error of predicted step time (%)"))
    for fam, (lo, hi) in cal.bands.items():
        console.print(f"  held-out error band ({fam}): {100 * lo:+.1f}% .. {100 * hi:+.1f}% (5th-95th percentile)")
    console.print(_identification_table(lost, cal.efficiency))
    if needs:
        console.print(f"  unidentified (>= {RESTS_ON:.0%} of its information lost) without: "
                      + "; ".join(f"{n}: {', '.join(gs)}" for n, gs in needs.items()))
    if fit and stored is not None:
        same = cal.efficiency == stored.efficiency
        console.print("refit " + ("reproduces the stored parameters" if same else "differs from the stored parameters"))
