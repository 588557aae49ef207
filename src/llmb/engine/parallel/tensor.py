"""Tensor parallelism with sequence parallelism (Megatron-style), through DTensor's
``parallelize_module``: attention heads and MLP columns are split over the ``tp`` mesh; norms
and the residual stream are split along the sequence between them. The output layer is
column-parallel and its logits are gathered, so the loss is computed on whole logits (cheap at
proxy vocab sizes; a vocab-parallel loss would be the next step for full-size vocabularies).
"""

from __future__ import annotations

from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from llmb.engine.models.moe import MoE
from llmb.engine.models.transformer import Transformer
from llmb.errors import LlmbError


def apply_tp(model: Transformer, tp_mesh: DeviceMesh) -> None:
    """Shard ``model`` (or a pipeline stage of it) over ``tp_mesh`` in place."""
    top = {}
    if model.tok_embeddings is not None:
        top["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1))
    if model.norm is not None:
        top["norm"] = SequenceParallel()
    if model.output is not None:
        top["output"] = ColwiseParallel(
            input_layouts=Shard(1), output_layouts=Replicate(), use_local_output=True
        )
    elif model.norm is not None:
        raise LlmbError("tensor parallelism with tied embeddings is not implemented")
    if top:
        parallelize_module(model, tp_mesh, top)
    for block in model.layers.values():
        if isinstance(block.feed_forward, MoE):
            raise LlmbError(
                "TP > 1 on a mixture-of-experts model is not implemented in the llmb engine "
                "(use EP and PP for MoE proxies)"
            )
        plan = {
            "attention_norm": SequenceParallel(),
            "attention": PrepareModuleInput(
                input_layouts=(Shard(1), None, None), desired_input_layouts=(Replicate(), None, None)
            ),
            "attention.wq": ColwiseParallel(),
            "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
            "ffn_norm": SequenceParallel(),
            "feed_forward": PrepareModuleInput(
                input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)
            ),
            "feed_forward.w1": ColwiseParallel(),
            "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
        }
        if block.feed_forward.w3 is not None:
            plan["feed_forward.w3"] = ColwiseParallel()
        parallelize_module(block, tp_mesh, plan)
