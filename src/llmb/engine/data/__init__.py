"""The engine's training batches.

Every source is an iterator of ``(tokens, labels)`` micro-batches for one data-parallel rank,
each an int64 tensor ``[micro_batch, seq_len]`` (``labels`` = ``tokens`` shifted by one). The
train loop pulls GA micro-batches per step and does not care where they come from:
:class:`~llmb.engine.data.synthetic.SyntheticTokens` (the recipes' mock data) or
:class:`~llmb.engine.data.batches.TokenBatches` over a Megatron-style indexed dataset
(:mod:`llmb.data`, the on-disk format, needs no torch)::

    from llmb.data import IndexedDataset, sample_prefix
    from llmb.engine.data import TokenBatches

    batches = TokenBatches(IndexedDataset(sample_prefix()), seq_len=256, micro_batch=4, seed=0,
                           dp_rank=0, dp_size=1)       # this rank's shard of the global stream
    tokens, labels = next(batches)                     # int64 [micro_batch, seq_len] each
    state = batches.state_dict()                       # {"consumed_samples": ..., ...}
    batches.load_state_dict(state)                     # resume exactly there
"""

from __future__ import annotations

from llmb.data import open_dataset
from llmb.engine.data.batches import TokenBatches
from llmb.engine.data.synthetic import MicroBatch, SyntheticTokens

__all__ = ["MicroBatch", "SyntheticTokens", "TokenBatches", "token_batches"]


def token_batches(data: str, *, vocab: int, seq_len: int, micro_batch: int, seed: int, dp_rank: int,
                  dp_size: int) -> TokenBatches:
    """This rank's batches of the dataset ``data`` names (``"sample"`` or a prefix)."""
    return TokenBatches(open_dataset(data, vocab), seq_len=seq_len, micro_batch=micro_batch, seed=seed,
                        dp_rank=dp_rank, dp_size=dp_size)
