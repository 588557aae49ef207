"""Training data for the engine.

Every source is an iterator of ``(tokens, labels)`` micro-batches for one data-parallel rank,
each an int64 tensor ``[micro_batch, seq_len]`` (``labels`` = ``tokens`` shifted by one). The
train loop pulls GA micro-batches per step and does not care where they come from:
:class:`~llmb.engine.data.synthetic.SyntheticTokens` (the recipes' mock data) or Megatron-style
indexed datasets::

    from llmb.engine.data import IndexedDataset, TokenBatches, sample_prefix

    dataset = IndexedDataset(sample_prefix())          # PREFIX.bin + PREFIX.idx, memory-mapped
    batches = TokenBatches(dataset, seq_len=256, micro_batch=4, seed=0,
                           dp_rank=0, dp_size=1)       # this rank's shard of the global stream
    tokens, labels = next(batches)                     # int64 [micro_batch, seq_len] each
    state = batches.state_dict()                       # {"consumed_samples": ..., ...}
    batches.load_state_dict(state)                     # resume exactly there

- :class:`IndexedDataset` / :class:`IndexedDatasetWriter` (``indexed.py``): the on-disk format
  of Megatron-Core, byte for byte, so data prepared by either side trains in the other.
- :class:`TokenBatches` (``batches.py``): fixed-length samples of ``seq_len + 1`` tokens over the
  concatenated documents, shuffled per epoch from a seed, sharded over data-parallel ranks.
- :func:`~llmb.engine.data.prepare.prepare` (``prepare.py``): JSONL -> indexed dataset with a
  Hugging Face ``tokenizers`` tokenizer (``llmb data prepare``).
- ``sample/``: a small real-English-prose corpus, its tokenizer and its prepared dataset, so
  the engine can train on real text with no preprocessing step.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from llmb.engine.data.indexed import IndexedDataset, IndexedDatasetWriter, token_dtype_for_vocab

__all__ = [
    "IndexedDataset",
    "MicroBatch",
    "SyntheticTokens",
    "IndexedDatasetWriter",
    "TokenBatches",
    "sample_dir",
    "sample_prefix",
    "sample_tokenizer_path",
    "token_batches",
    "token_dtype_for_vocab",
]

SAMPLE_NAME = "prose"


def __getattr__(name: str):
    # These need torch; importing them lazily keeps `llmb data info`/`prepare` quick.
    if name == "TokenBatches":
        from llmb.engine.data.batches import TokenBatches

        return TokenBatches
    if name in ("SyntheticTokens", "MicroBatch"):
        from llmb.engine.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def token_batches(data: str, *, vocab: int, seq_len: int, micro_batch: int, seed: int, dp_rank: int, dp_size: int):
    """The engine's real-data source: ``data`` is ``"sample"`` (the shipped prose) or the prefix
    of an indexed dataset. Refuses a dataset whose token ids do not fit the model's vocabulary."""
    import numpy as np

    from llmb.engine.data.batches import TokenBatches
    from llmb.errors import LlmbError

    prefix = sample_prefix() if data == "sample" else Path(data)
    dataset = IndexedDataset(prefix)
    bound = int(np.max(dataset.tokens)) + 1 if dataset.num_tokens else 0
    if bound > vocab:
        raise LlmbError(
            f"{prefix}: token ids reach {bound - 1}, beyond the model's vocabulary of {vocab} "
            "(use a proxy or model with a larger vocabulary, or a dataset tokenized for it)"
        )
    return TokenBatches(dataset, seq_len=seq_len, micro_batch=micro_batch, seed=seed, dp_rank=dp_rank, dp_size=dp_size)


def sample_dir() -> Path:
    """Folder of the shipped sample: ``prose.jsonl``, ``tokenizer.json``, ``prose.bin/.idx``."""
    return Path(str(resources.files("llmb.engine.data") / "sample"))


def sample_prefix() -> Path:
    """Prefix of the shipped, ready-to-train indexed dataset (pass to :class:`IndexedDataset`)."""
    return sample_dir() / SAMPLE_NAME


def sample_tokenizer_path() -> Path:
    """The byte-level BPE tokenizer the shipped dataset was prepared with."""
    return sample_dir() / "tokenizer.json"
