"""Data commands: ``llmb data prepare`` (JSONL -> indexed dataset) and ``llmb data info``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmb.cli.app import JSON_OPTION, app, console, print_json
from llmb.errors import LlmbError

data_app = typer.Typer(
    help="Real training data: tokenize JSONL into Megatron-style .bin/.idx, inspect datasets.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")

DEFAULT_VOCAB_SIZE = 8192
# Below this size a progress bar would only flicker.
PROGRESS_MIN_BYTES = 8 * 2**20


@data_app.command("prepare")
def prepare_cmd(
    input_path: Path = typer.Argument(..., metavar="INPUT.jsonl", help="One JSON object per line."),
    output_prefix: str = typer.Option(
        ..., "--output-prefix", help="Writes PREFIX.bin and PREFIX.idx (Megatron's format)."
    ),
    json_key: str = typer.Option("text", "--json-key", help="Key of the text in each object."),
    tokenizer: Optional[Path] = typer.Option(
        None, "--tokenizer", help="A Hugging Face tokenizer.json to tokenize with."
    ),
    train_tokenizer: bool = typer.Option(
        False, "--train-tokenizer", help="Train a byte-level BPE on the input instead."
    ),
    vocab_size: Optional[int] = typer.Option(
        None,
        "--vocab-size",
        help="Largest vocabulary of the trained tokenizer (merges seen once are not learned)"
        f" [{DEFAULT_VOCAB_SIZE}].",
    ),
    tokenizer_out: Optional[Path] = typer.Option(
        None, "--tokenizer-out", help="Where to save the trained tokenizer [PREFIX.tokenizer.json]."
    ),
    append_eod: bool = typer.Option(
        False, "--append-eod", help="End every document with the end-of-document token."
    ),
    eod_token: Optional[str] = typer.Option(
        None, "--eod-token", help="The end-of-document token [<|endoftext|>, </s>, ... if present]."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Tokenize a JSONL file into an indexed dataset, as Megatron's preprocess_data.py does."""
    from llmb.data.prepare import prepare

    if (tokenizer is None) == (not train_tokenizer):
        raise LlmbError("give exactly one of --tokenizer FILE and --train-tokenizer")
    if not train_tokenizer and (vocab_size is not None or tokenizer_out is not None):
        raise LlmbError("--vocab-size and --tokenizer-out go with --train-tokenizer")
    if train_tokenizer:
        vocab_size = vocab_size if vocab_size is not None else DEFAULT_VOCAB_SIZE
        tokenizer_out = tokenizer_out or Path(f"{output_prefix}.tokenizer.json")

    total_bytes = input_path.stat().st_size if input_path.is_file() else 0
    show_progress = console.is_terminal and not as_json and total_bytes >= PROGRESS_MIN_BYTES
    kwargs = dict(
        tokenizer_path=tokenizer,
        train_vocab_size=vocab_size if train_tokenizer else None,
        save_tokenizer=tokenizer_out,
        json_key=json_key,
        append_eod=append_eod,
        eod_token=eod_token,
    )
    if show_progress:
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("reading", total=total_bytes)
            summary = prepare(
                input_path,
                output_prefix,
                on_progress=lambda phase, done: progress.update(
                    task, description=phase, completed=done
                ),
                **kwargs,
            )
    else:
        summary = prepare(input_path, output_prefix, **kwargs)

    if as_json:
        print_json(summary.to_dict())
        return
    console.print(
        f"[bold]{summary.output_prefix}[/].bin/.idx: {summary.documents:,} documents, "
        f"{summary.tokens:,} tokens ({summary.dtype}, vocab {summary.vocab_size:,})",
        highlight=False,
    )
    if summary.skipped_empty_documents:
        skipped = summary.skipped_empty_documents
        console.print(f"skipped {skipped:,} empty documents", highlight=False)
    console.print(
        f"{summary.input_bytes:,} input bytes -> {summary.output_bytes:,} output bytes in "
        f"{summary.seconds:.2f} s ({summary.tokens_per_s:,.0f} tokens/s)",
        highlight=False,
    )
    if summary.tokenizer_path:
        console.print(f"tokenizer: {summary.tokenizer_path}", highlight=False)


@data_app.command("info")
def info_cmd(
    prefix: str = typer.Argument(..., metavar="PREFIX", help="Dataset prefix (.bin + .idx)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Documents, tokens, token dtype and vocabulary bound of an indexed dataset."""
    from llmb.data.indexed import IndexedDataset

    dataset = IndexedDataset(prefix)
    info = {
        "prefix": prefix,
        "documents": dataset.num_documents,
        "sequences": dataset.num_sequences,
        "tokens": dataset.num_tokens,
        "dtype": str(dataset.dtype.newbyteorder("=")),
        "vocab_bound": dataset.vocab_bound(),
        "bin_bytes": dataset.bin_path.stat().st_size,
        "idx_bytes": dataset.idx_path.stat().st_size,
    }
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        shown = f"{value:,}" if isinstance(value, int) else value
        console.print(f"{key:<12} {shown}", highlight=False)
    console.print("vocab_bound = largest token id + 1: the smallest usable vocabulary")
