"""Training data on disk, without torch: Megatron's indexed format, JSONL preparation and the
shipped real-text sample.

- :class:`IndexedDataset` / :class:`IndexedDatasetWriter` (``indexed.py``): the on-disk format
  of Megatron-Core, byte for byte, so data prepared by either side trains in the other.
- :func:`~llmb.data.prepare.prepare` (``prepare.py``): JSONL -> indexed dataset with a Hugging
  Face ``tokenizers`` tokenizer (``llmb data prepare``).
- ``sample/``: a small real-English-prose corpus, its tokenizer and its prepared dataset, so
  the engine can train on real text with no preprocessing step.
- :func:`open_dataset`: the dataset a run's ``--data`` names, checked against the model's
  vocabulary. Planning calls it before any process starts; the engine's batches
  (:mod:`llmb.engine.data`) read the same dataset.

Example::

    from llmb.data import IndexedDataset, sample_prefix

    dataset = IndexedDataset(sample_prefix())          # PREFIX.bin + PREFIX.idx, memory-mapped
    first_document = dataset.document(0)               # a NumPy view of its token ids
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from llmb.data.indexed import IndexedDataset, IndexedDatasetWriter, token_dtype_for_vocab
from llmb.errors import LlmbError

__all__ = [
    "SAMPLE",
    "IndexedDataset",
    "IndexedDatasetWriter",
    "open_dataset",
    "sample_dir",
    "sample_prefix",
    "sample_tokenizer_path",
    "token_dtype_for_vocab",
]

SAMPLE = "sample"  # the --data value naming the shipped sample
SAMPLE_NAME = "prose"


def sample_dir() -> Path:
    """Folder of the shipped sample: ``prose.jsonl``, ``tokenizer.json``, ``prose.bin/.idx``."""
    return Path(str(resources.files("llmb.data") / "sample"))


def sample_prefix() -> Path:
    """Prefix of the shipped, ready-to-train indexed dataset (pass to :class:`IndexedDataset`)."""
    return sample_dir() / SAMPLE_NAME


def sample_tokenizer_path() -> Path:
    """The byte-level BPE tokenizer the shipped dataset was prepared with."""
    return sample_dir() / "tokenizer.json"


def open_dataset(data: str, vocab: int) -> IndexedDataset:
    """The dataset ``data`` names (``"sample"`` or an indexed-dataset prefix), refused with one
    line when it is missing, malformed, or holds token ids beyond ``vocab``."""
    prefix = sample_prefix() if data == SAMPLE else Path(data).expanduser()
    dataset = IndexedDataset(prefix)
    bound = dataset.vocab_bound()
    if bound > vocab:
        raise LlmbError(
            f"{prefix}: token ids reach {bound - 1}, beyond the model's vocabulary of {vocab} "
            "(use a proxy or model with a larger vocabulary, or a dataset tokenized for it)"
        )
    return dataset
