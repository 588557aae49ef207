"""Transformer models built from a catalog :class:`~llmb.catalog.ModelSpec`.

Plain ``nn.Module`` s: no process groups and no parallelism flags. Build them on the ``meta``
device, apply parallelism from outside (:mod:`llmb.engine.parallel`), then materialize each
rank's shard with ``to_empty`` + :meth:`Transformer.init_weights`.
"""

from llmb.engine.models.init import seeded_normal_
from llmb.engine.models.layers import FeedForward, LayerNorm, RMSNorm
from llmb.engine.models.moe import GroupedExperts, MoE, route
from llmb.engine.models.transformer import Attention, Transformer, TransformerBlock

__all__ = [
    "Attention",
    "FeedForward",
    "GroupedExperts",
    "LayerNorm",
    "MoE",
    "RMSNorm",
    "Transformer",
    "TransformerBlock",
    "route",
    "seeded_normal_",
]
