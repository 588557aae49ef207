"""Tokenize a JSONL file into an indexed dataset (``llmb data prepare``).

The counterpart of Megatron's ``tools/preprocess_data.py`` without sentence splitting: one
JSON object per line, the text under ``json_key``, one document per line, optionally the
end-of-document token appended. The tokenizer is a Hugging Face ``tokenizers`` one, loaded
from a ``tokenizer.json`` or trained here as a byte-level BPE on the input itself; nothing is
downloaded. The input is streamed, never held whole: training reads it once, tokenizing once
more. Unlike Megatron, the output prefix is used as given (no ``_text_document`` suffix).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llmb.data.indexed import IndexedDatasetWriter, bin_path, idx_path
from llmb.errors import LlmbError

EOD_TOKEN = "<|endoftext|>"
# End-of-document tokens of common tokenizer.json files, tried in order when none is named.
KNOWN_EOD_TOKENS = (EOD_TOKEN, "</s>", "<|end_of_text|>", "<eos>", "<|eos|>", "<|im_end|>")
DOCS_PER_BATCH = 512  # documents handed to the (multi-threaded) batch encoder at once

ProgressFn = Callable[[str, int], None]  # called with (phase, input bytes read so far)


@dataclass(frozen=True)
class PrepareSummary:
    """What one ``prepare`` run did. Sizes in bytes; ``seconds`` is the wall time of the whole
    run, tokenizer training included, and ``tokens_per_s`` is ``tokens / seconds``."""

    input_path: str
    output_prefix: str
    documents: int
    skipped_empty_documents: int
    tokens: int
    input_bytes: int
    output_bytes: int
    seconds: float
    tokens_per_s: float
    dtype: str
    vocab_size: int
    eod_id: int | None
    tokenizer_path: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def iter_texts(path: str | os.PathLike, json_key: str = "text") -> Iterator[tuple[str, int]]:
    """Yield ``(text, input bytes read so far)`` per JSONL line; blank lines are skipped.

    Raises :class:`LlmbError` naming the line for invalid JSON, a line that is not an object,
    a missing key or a value that is not a string.
    """
    path = Path(path)
    if not path.is_file():
        raise LlmbError(f"input file {path} not found")
    bytes_read = 0
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise LlmbError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        for line_no, raw in enumerate(f, start=1):
            bytes_read += len(raw)
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise LlmbError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            except UnicodeDecodeError:
                raise LlmbError(f"{path}:{line_no}: not valid UTF-8") from None
            if not isinstance(record, dict):
                raise LlmbError(f"{path}:{line_no}: a line must be a JSON object")
            if json_key not in record:
                raise LlmbError(f"{path}:{line_no}: no key {json_key!r} (use --json-key)")
            text = record[json_key]
            if not isinstance(text, str):
                kind = type(text).__name__
                raise LlmbError(f"{path}:{line_no}: {json_key!r} is {kind}, not a string")
            yield text, bytes_read


def train_tokenizer(
    path: str | os.PathLike,
    vocab_size: int,
    json_key: str = "text",
    min_frequency: int = 2,
    on_progress: ProgressFn | None = None,
) -> Tokenizer:
    """Train a byte-level BPE (GPT-2 style) on the texts of a JSONL file.

    Id 0 is ``<|endoftext|>``, then the 256 byte symbols, then the merges, up to
    ``vocab_size`` entries: fewer when the input has no more pairs seen ``min_frequency``
    times (a small corpus stops early rather than learn one-off merges). Deterministic for
    a given input.
    """
    if vocab_size < 257 + 1:
        raise LlmbError(f"vocab size {vocab_size} is too small: byte-level BPE needs at least 258")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    counted = [0]

    def texts() -> Iterator[str]:
        for text, bytes_read in iter_texts(path, json_key):
            counted[0] += 1
            if on_progress is not None and counted[0] % DOCS_PER_BATCH == 0:
                on_progress("training tokenizer", bytes_read)
            yield text

    tokenizer.train_from_iterator(texts(), trainer=trainer)
    if counted[0] == 0:
        raise LlmbError(f"{path} has no documents")
    return tokenizer


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a Hugging Face ``tokenizer.json``."""
    path = Path(path)
    if not path.is_file():
        raise LlmbError(f"tokenizer file {path} not found")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a bare Exception with its parse error
        raise LlmbError(f"{path} is not a tokenizer.json: {exc}") from None


def find_eod_id(tokenizer: Tokenizer, eod_token: str | None = None) -> int:
    """Id of ``eod_token``, or of the first known end-of-document token the tokenizer has."""
    candidates = (eod_token,) if eod_token else KNOWN_EOD_TOKENS
    for token in candidates:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    if eod_token:
        raise LlmbError(f"the tokenizer has no token {eod_token!r}")
    raise LlmbError(
        f"the tokenizer has none of {', '.join(KNOWN_EOD_TOKENS)}; "
        "name its end token with --eod-token"
    )


#: A byte-level BPE starts from 256 byte tokens; Megatron's index stores token ids as int32.
MIN_VOCAB = 257
MAX_VOCAB = 2**31 - 1


def _check_writable(prefix: str) -> None:
    probe = bin_path(prefix).with_name(bin_path(prefix).name + ".probe")
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise LlmbError(f"cannot write to {probe.parent}: {exc.strerror or exc}") from None


def prepare(
    input_path: str | os.PathLike,
    output_prefix: str | os.PathLike,
    *,
    tokenizer: Tokenizer | None = None,
    tokenizer_path: str | os.PathLike | None = None,
    train_vocab_size: int | None = None,
    save_tokenizer: str | os.PathLike | None = None,
    json_key: str = "text",
    append_eod: bool = False,
    eod_token: str | None = None,
    on_progress: ProgressFn | None = None,
) -> PrepareSummary:
    """Tokenize ``input_path`` (JSONL) into ``output_prefix``.bin/.idx.

    The tokenizer is ``tokenizer``, or loaded from ``tokenizer_path``, or trained on the input
    with ``train_vocab_size`` entries (and written to ``save_tokenizer`` if given). Texts that
    tokenize to nothing are skipped and counted. ``on_progress`` receives the phase
    (``"training tokenizer"``, ``"tokenizing"``) and the input bytes read in it.
    Texts are encoded with the tokenizer's own special-token handling (as Megatron's
    ``HuggingFaceTokenizer`` does: a BOS is added if the tokenizer.json says so).
    """
    given = sum(x is not None for x in (tokenizer, tokenizer_path, train_vocab_size))
    if given != 1:
        raise LlmbError("give exactly one tokenizer: --tokenizer FILE or --train-tokenizer")
    if train_vocab_size is not None and not MIN_VOCAB <= train_vocab_size <= MAX_VOCAB:
        raise LlmbError(f"--vocab-size must be a whole number from {MIN_VOCAB} to {MAX_VOCAB:,}, got {train_vocab_size}")
    input_path, output_prefix = Path(input_path), os.fspath(output_prefix)
    name = Path(output_prefix).name
    if not name or name.startswith(".") or os.fspath(output_prefix).endswith(os.sep):
        raise LlmbError(f"--output-prefix {os.fspath(output_prefix)!r} names no file: give a path such as data/prose "
                        "(writes data/prose.bin and data/prose.idx)")
    if not input_path.is_file():
        raise LlmbError(f"input file {input_path} not found")
    _check_writable(output_prefix)
    started = time.perf_counter()

    if tokenizer_path is not None:
        tokenizer = load_tokenizer(tokenizer_path)
    elif train_vocab_size is not None:
        tokenizer = train_tokenizer(input_path, train_vocab_size, json_key, on_progress=on_progress)
        if save_tokenizer is not None:
            try:
                Path(save_tokenizer).parent.mkdir(parents=True, exist_ok=True)
                tokenizer.save(os.fspath(save_tokenizer), pretty=False)
            except Exception as exc:
                raise LlmbError(f"cannot write {save_tokenizer}: {exc}") from None
            tokenizer_path = save_tokenizer
    eod_id = find_eod_id(tokenizer, eod_token) if append_eod else None
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    skipped = 0
    with IndexedDatasetWriter(output_prefix, vocab_size=vocab_size) as writer:

        def flush(texts: list[str]) -> None:
            nonlocal skipped
            for encoding in tokenizer.encode_batch(texts):
                ids = encoding.ids
                if not ids:
                    skipped += 1
                    continue
                if eod_id is not None:
                    ids.append(eod_id)
                writer.add_document(np.asarray(ids, dtype=np.int64))

        batch: list[str] = []
        bytes_read = 0
        for text, bytes_read in iter_texts(input_path, json_key):
            batch.append(text)
            if len(batch) == DOCS_PER_BATCH:
                flush(batch)
                batch = []
                if on_progress is not None:
                    on_progress("tokenizing", bytes_read)
        if batch:
            flush(batch)
        if on_progress is not None:
            on_progress("tokenizing", bytes_read)
        if writer.num_documents == 0:
            raise LlmbError(f"{input_path} has no documents with any tokens")
        documents, tokens, dtype = writer.num_documents, writer.num_tokens, writer.dtype

    seconds = time.perf_counter() - started
    return PrepareSummary(
        input_path=os.fspath(input_path),
        output_prefix=output_prefix,
        documents=documents,
        skipped_empty_documents=skipped,
        tokens=tokens,
        input_bytes=input_path.stat().st_size,
        output_bytes=bin_path(output_prefix).stat().st_size
        + idx_path(output_prefix).stat().st_size,
        seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else float("inf"),
        dtype=str(dtype),
        vocab_size=vocab_size,
        eod_id=eod_id,
        tokenizer_path=os.fspath(tokenizer_path) if tokenizer_path is not None else None,
    )
