"""Catalog and planning commands: ``list``, ``show``, ``flops``, ``audit``."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from llmb.catalog import default_catalog
from llmb.cli.app import JSON_OPTION, app, console, print_json
from llmb.plan import CONVENTIONS, param_count, resolve
from llmb.plan.audit import audit_catalog
from llmb.plan.flops import flops_breakdown

# Layout knobs shared by every command that plans a run.
TP = typer.Option(None, "--tp", help="Tensor-parallel size.")
PP = typer.Option(None, "--pp", help="Pipeline-parallel size.")
CP = typer.Option(None, "--cp", help="Context-parallel size.")
EP = typer.Option(None, "--ep", help="Expert-parallel size.")
ETP = typer.Option(None, "--etp", help="Expert tensor-parallel size.")
VP = typer.Option(None, "--vp", help="Virtual pipeline chunks per rank.")
MBS = typer.Option(None, "--mbs", help="Micro-batch size.")
GBS = typer.Option(None, "--gbs", help="Global batch size.")
LAYERS = typer.Option(None, "--layers", help="Transformer layers (the tables' Layers column, e.g. reduced-layer proxies).")
PP_SPLIT = typer.Option("auto", "--pp-split", help="Pipeline split: account (embedding and loss count as layers), "
                        "plain, or auto (the recipe's, unless only the other divides).")
RELEASE = typer.Option(None, "--release", help="Recipe release of the layout and baseline (e.g. 25.02; "
                       "default: the newest published at that scale).")


def _size_option() -> typer.models.OptionInfo:
    return typer.Option(None, "--size", "-s", help="Model size (e.g. 8b); optional when there is one.")


def _default_size(workload: str, size: Optional[str]) -> str:
    if size is not None:
        return size
    wl = default_catalog().workload(workload)
    if len(wl.sizes) == 1:
        return next(iter(wl.sizes))
    from llmb.errors import LlmbError

    raise LlmbError(f"{wl.name} has several sizes ({', '.join(wl.sizes)}): choose one with --size")


@app.command("list")
def list_workloads(as_json: bool = JSON_OPTION) -> None:
    """List workloads with their sizes, dtypes, GPU types, scales and baselines."""
    catalog = default_catalog()
    rows = []
    for wl in sorted(catalog.workloads.values(), key=lambda w: w.name):
        for size, spec in wl.sizes.items():
            rows.append(
                {
                    "workload": wl.name,
                    "size": size,
                    "framework": wl.framework,
                    "frameworks": sorted({wl.framework_of(b.source) for b in spec.baselines} or {wl.framework}),
                    "releases": wl.releases(size),
                    "family": spec.model.family,
                    "dtypes": sorted({d for r in spec.layouts for d in r.dtypes}),
                    "gpu_types": sorted({r.gpu_type for r in spec.layouts}),
                    "scales": sorted({r.gpus for r in spec.layouts}),
                    "baselines": len(spec.baselines),
                    "aliases": list(wl.aliases),
                }
            )
    if as_json:
        print_json(rows)
        return
    table = Table(title="llmb workload catalog", title_justify="left")
    for col in ("workload", "size", "framework", "GPU types", "dtypes", "GPUs", "releases", "baselines"):
        table.add_column(col, justify="right" if col == "baselines" else "left")
    for r in rows:
        table.add_row(
            r["workload"], r["size"], ", ".join(r["frameworks"]), ", ".join(r["gpu_types"]),
            ", ".join(r["dtypes"]), " ".join(map(str, r["scales"])), " ".join(r["releases"]), str(r["baselines"]),
        )
    console.print(table)
    console.print(
        f"{len({r['workload'] for r in rows})} workloads, {len(rows)} sizes, "
        f"{sum(r['baselines'] for r in rows)} published baselines. "
        "Short names work too (e.g. llama3.1, nemotron4, llama4)."
    )


@app.command()
def show(
    workload: str = typer.Argument(..., help="Workload name or alias (e.g. llama3.1)."),
    size: Optional[str] = _size_option(),
    dtype: Optional[str] = typer.Option(None, "--dtype", "-d", help="bf16, fp8 or fp32."),
    gpus: Optional[int] = typer.Option(None, "--gpus", "-n", help="Total GPUs (default: smallest published scale)."),
    gpu_type: Optional[str] = typer.Option(None, "--gpu-type", "-g", help="GPU type (e.g. h100, gb200)."),
    tp: Optional[int] = TP, pp: Optional[int] = PP, cp: Optional[int] = CP, ep: Optional[int] = EP,
    etp: Optional[int] = ETP, vp: Optional[int] = VP, mbs: Optional[int] = MBS, gbs: Optional[int] = GBS,
    layers: Optional[int] = LAYERS, pp_split: str = PP_SPLIT, release: Optional[str] = RELEASE,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a workload's layout, derived sizes, FLOPs, parameters and published baseline."""
    overrides = dict(tp=tp, pp=pp, cp=cp, ep=ep, etp=etp, vp=vp, mbs=mbs, gbs=gbs, layers=layers)
    recipe = resolve(default_catalog(), workload, _default_size(workload, size), dtype, gpus, gpu_type, overrides,
                     pp_split, release)
    data = recipe.as_dict()
    if recipe.baseline and recipe.baseline.step_time_s:
        data["baseline_metrics"] = {c: recipe.metrics(recipe.baseline.step_time_s, c).as_dict() for c in CONVENTIONS}
    if as_json:
        print_json(data)
        return

    console.print(f"[bold]{recipe.workload.title}[/] — {recipe.title}")
    if recipe.release:
        others = [r for r in recipe.workload.releases(recipe.size) if r != recipe.release]
        more = f" (also published: {', '.join(others)}; --release)" if others else ""
        console.print(f"  release: {recipe.release}{more}")
    for note in recipe.notes:
        console.print(f"  note: {note}")
    m = recipe.model
    model_line = (
        f"{m.family}: {m.layers} layers, hidden {m.hidden}, ffn {m.ffn_hidden}, {m.heads} heads, "
        f"{m.query_groups} query groups, vocab {m.vocab}, seq {m.seq_len}, {m.activation}, {m.norm}"
    )
    if m.moe:
        model_line += (
            f", MoE {m.moe.num_experts} experts top-{m.moe.top_k} (ffn {m.moe.expert_ffn_hidden}) "
            f"+ {m.moe.shared_experts} shared on {m.moe_layers} layers"
        )
    console.print(f"  model: {model_line}")

    lay, der = recipe.layout, recipe.derived
    table = Table(title="layout", title_justify="left")
    names = ["GPUs", "TP", "PP", "CP", "EP", "ETP", "VP", "DP", "EDP", "MBS", "GBS", "GA"]
    values = [lay.gpus, lay.tp, lay.pp, lay.cp, lay.ep, der.etp, der.vp, der.dp, der.edp, lay.mbs, lay.gbs, der.ga]
    if lay.fsdp:
        names.append("FSDP")
        values.append(lay.fsdp)
    for n in names:
        table.add_column(n, justify="right")
    table.add_row(*map(str, values))
    console.print(table)
    if lay.pp > 1:
        console.print(f"  layers per pipeline rank: {list(der.layers_per_stage)} ({der.pipeline_chunks} chunks)")

    params = param_count(m)
    console.print(f"  parameters: {params.total / 1e9:.2f} B total, {params.active / 1e9:.2f} B active per token")
    ftable = Table(title="model FLOPs per sample (one sequence, fwd+bwd)", title_justify="left")
    for col in ("convention", "attention", "mlp", "logits", "total"):
        ftable.add_column(col, justify="right")
    for c in CONVENTIONS:
        fb = recipe.flops(c)
        ftable.add_row(c, f"{fb.attention:.3e}", f"{fb.mlp:.3e}", f"{fb.logits:.3e}", f"{fb.total:.3e}")
    console.print(ftable)
    console.print("  (6n puts 6 x N for every parameter but the input embedding under 'mlp')")

    b = recipe.baseline
    if b is None:
        console.print("  no published baseline at this scale")
        return
    console.print(f"  published baseline ({recipe.workload.sources[b.source].document}, release {b.release}):")
    pub = Table(title_justify="left")
    for col in ("", "step time s", "tokens/s", "TFLOP/s/GPU", "MFU %", "days per 1T"):
        pub.add_column(col, justify="right")
    pub.add_row(
        "published",
        *(f"{v:g}" if v is not None else "-" for v in (b.step_time_s, b.tokens_per_s, b.tflops_per_gpu, b.mfu_pct, b.days_per_1t_tokens)),
    )
    if b.step_time_s:
        for c in CONVENTIONS:
            met = recipe.metrics(b.step_time_s, c)
            pub.add_row(
                f"implied ({c})", f"{met.step_time_s:g}", f"{met.tokens_per_s:,.0f}",
                f"{met.tflops_per_gpu:.1f}", f"{100 * met.mfu:.2f}", f"{met.days_per_1t_tokens:.2f}",
            )
    console.print(pub)
    console.print(f"  MFU denominator: {recipe.gpu.name} dense {recipe.dtype.upper()} peak, {recipe.peak_flops / 1e12:g} TFLOP/s")


@app.command()
def flops(
    workload: Optional[str] = typer.Argument(None, help="Workload (default: every workload)."),
    size: Optional[str] = _size_option(),
    as_json: bool = JSON_OPTION,
) -> None:
    """Model FLOPs per sample under each convention, and parameter counts."""
    catalog = default_catalog()
    workloads = [catalog.workload(workload)] if workload else sorted(catalog.workloads.values(), key=lambda w: w.name)
    rows = []
    for wl in workloads:
        sizes = [catalog.size(wl, size)] if size else list(wl.sizes.items())
        for size_name, spec in sizes:
            models = {(r.layers or spec.model.layers) for r in spec.layouts} or {spec.model.layers}
            for layers in sorted(models):
                model = spec.model.with_layers(layers)
                params = param_count(model)
                row = {
                    "workload": wl.name, "size": size_name, "layers": layers, "seq_len": model.seq_len,
                    "recipe_formula": wl.recipe_flops,
                    "params_total": params.total, "params_active": params.active,
                    "published_flops_per_sample": spec.published_flops_per_sample if layers == spec.model.layers else None,
                }
                for c in CONVENTIONS:
                    row[f"flops_{c}"] = flops_breakdown(model, c, wl.recipe_flops).total
                rows.append(row)
    if as_json:
        print_json(rows)
        return
    table = Table(title="model FLOPs per sample (fwd+bwd, one sequence)", title_justify="left")
    for col in ("workload", "size", "layers", "seq", "params", "active", *CONVENTIONS, "published"):
        table.add_column(col, justify="left" if col in ("workload", "size") else "right")
    for r in rows:
        table.add_row(
            r["workload"], r["size"], str(r["layers"]), str(r["seq_len"]),
            f"{r['params_total'] / 1e9:.2f}B", f"{r['params_active'] / 1e9:.2f}B",
            *(f"{r[f'flops_{c}']:.3e}" for c in CONVENTIONS),
            f"{r['published_flops_per_sample']:.3g}" if r["published_flops_per_sample"] else "",
        )
    console.print(table)
    console.print(
        "recipe: the reference documents' formulas; megatron: causal-halved attention, GQA, "
        "SwiGLU x1.5, top-k experts; 6n: 6 x active params (less input embedding) + 12 x L x h x S"
    )


@app.command()
def audit(as_json: bool = JSON_OPTION) -> None:
    """Recompute every published derived number and explain the mismatches."""
    report = audit_catalog(default_catalog())
    if as_json:
        print_json(report.as_dict())
        return
    console.print(
        f"Audited {report.rows} published baseline rows and {report.layout_rows} layout rows: "
        f"{len(report.checks)} derived numbers recomputed from the published step times "
        f"(recipe FLOPs convention, tolerance 0.2 % or the printed precision)."
    )
    bad = report.mismatches
    if not bad:
        console.print("[green]No mismatches.[/]")
        return
    table = Table(title=f"{len(bad)} mismatches", title_justify="left")
    for col in ("#", "workload", "size", "dtype", "GPUs", "metric", "published", "recomputed", "error"):
        table.add_column(col, justify="left" if col in ("workload", "size", "dtype", "metric") else "right")
    for i, c in enumerate(bad, 1):
        table.add_row(
            str(i), c.workload, c.size, c.dtype, f"{c.gpus}x {c.gpu_type}", c.metric, f"{c.published:g}",
            f"{c.recomputed:.4g}", f"{100 * c.rel_error:+.2f}%",
        )
    console.print(table)
    console.print("Likely causes (single changes that reproduce the published number):")
    for i, c in enumerate(bad, 1):
        cause = "; ".join(c.causes) if c.causes else "no single change in the search reproduces it"
        implied = ", ".join(f"{k} = {v:.5g}" for k, v in c.implied)
        console.print(f"  {i:>2}. {cause}" + (f" [dim](exactly: {implied})[/]" if implied else ""))
    for pattern in report.patterns():
        console.print(f"Systematic: {pattern.describe()}.")
