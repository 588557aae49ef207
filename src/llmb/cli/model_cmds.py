"""Trained models in and out: ``llmb eval`` (the loss of a checkpoint on a dataset) and
``llmb ckpt export`` (a llmb checkpoint as a transformers checkpoint).

Both take a llmb checkpoint (a ``step_N`` folder, its ``checkpoints/`` folder or its
experiment folder) or, for ``eval``, ``hf:DIR``, a transformers checkpoint folder. What they
are given is checked by :mod:`llmb.plan.pretrained` before anything is loaded; the work is the
engine's (:mod:`llmb.engine.pretrained`), in this process, on one rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmb.cli.app import JSON_OPTION, app, console, print_json
from llmb.errors import LlmbError

ckpt_app = typer.Typer(help="Checkpoints: export to other formats.", no_args_is_help=True)
app.add_typer(ckpt_app, name="ckpt")


@app.command("eval")
def eval_cmd(
    init_from: str = typer.Option(..., "--init-from", help="the model: a llmb checkpoint, or hf:DIR (a transformers checkpoint)"),
    data: str = typer.Option(..., "--data", help="indexed dataset PREFIX (.bin/.idx), or 'sample'"),
    batches: int = typer.Option(..., "--batches", help="windows to score, from the start of the token stream"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="tokens per window (+1 label) [the checkpoint's sequence length]"),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32 or bf16"),
    mbs: int = typer.Option(1, "--mbs", help="windows per forward pass (the result does not depend on it)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Mean next-token loss of a checkpoint on the first N windows of a dataset (no shuffling)."""
    from llmb.plan.pretrained import resolve_eval

    plan = resolve_eval(init_from, data, batches, seq_len, dtype.lower(), mbs)
    from llmb.engine.pretrained import evaluate

    result = evaluate(plan)
    m = plan.model
    if as_json:
        print_json({"source": plan.source.text, "data": str(plan.data), "family": m.family,
                    "layers": m.layers, "hidden": m.hidden, "vocab": m.vocab, **result.as_dict()})
        return
    console.print(
        f"llmb eval {plan.source.text}\n"
        f"  model   {m.family}: {m.layers} layers, hidden {m.hidden}, vocab {m.vocab}\n"
        f"  data    {plan.data}: {result.windows} windows of {result.seq_len} + 1 tokens from the start "
        f"({result.tokens_scored:,} predictions), {result.dtype}\n"
        f"  loss    {result.loss:.6f} nats per token (perplexity {result.perplexity:,.2f}) in {result.seconds:.1f} s",
        highlight=False, soft_wrap=True,
    )


@ckpt_app.command("export")
def export_cmd(
    checkpoint: str = typer.Argument(..., metavar="CKPT", help="a llmb checkpoint, its checkpoints/ folder or its experiment folder"),
    to: str = typer.Option("hf", "--to", help="format: hf (transformers: config.json + safetensors)"),
    out: Path = typer.Option(..., "--out", help="folder to write (new or empty)"),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32 or bf16 weights"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write a llmb checkpoint as a transformers checkpoint (AutoModelForCausalLM loads it)."""
    from llmb.catalog.hf_config import hf_config_from_spec
    from llmb.checkpoint_files import resolve_load_path
    from llmb.plan.pretrained import checkpoint_model

    if to.lower() != "hf":
        raise LlmbError(f"--to {to!r}: the one export format is hf")
    if dtype.lower() not in ("fp32", "bf16"):
        raise LlmbError(f"--dtype must be fp32 or bf16, got {dtype!r}")
    path = resolve_load_path(checkpoint)
    out = out.expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LlmbError(f"--out {out} exists and is not an empty folder")
    hf_config_from_spec(checkpoint_model(path))  # refuses what transformers cannot express, before loading
    from llmb.engine.pretrained import export_checkpoint

    done = export_checkpoint(path, out, dtype.lower())
    if as_json:
        print_json({"checkpoint": str(path), "out": str(out), "format": "hf", "dtype": dtype.lower(),
                    "files": list(done.files), "tensors": done.tensors, "bytes": done.bytes, "seconds": done.seconds})
        return
    names = ", ".join(Path(f).name for f in done.files)
    console.print(f"exported {path} -> {out}: {done.tensors} tensors, {done.bytes / 2**20:.1f} MiB "
                  f"({names}) in {done.seconds:.1f} s", highlight=False, soft_wrap=True)
