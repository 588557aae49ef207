"""Training data for the engine.

Every source is an iterator of ``(tokens, labels)`` micro-batches for one data-parallel rank,
each an int64 tensor ``[micro_batch, seq_len]`` (``labels`` = ``tokens`` shifted by one).
The train loop pulls GA micro-batches per step and does not care where they come from:
:class:`~llmb.engine.data.synthetic.SyntheticTokens` (the recipes' mock data) or the indexed
.bin/.idx datasets.
"""

from llmb.engine.data.synthetic import MicroBatch, SyntheticTokens

__all__ = ["MicroBatch", "SyntheticTokens"]
