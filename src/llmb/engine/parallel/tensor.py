"""Tensor parallelism with sequence parallelism (Megatron-style), through DTensor's
``parallelize_module``: attention heads and MLP columns are split over the ``tp`` mesh; norms
and the residual stream are split along the sequence between them. The output layer is
column-parallel and each rank keeps its vocabulary shard of the logits: the loss is
vocab-parallel (``Trainer.loss_context``: torch's ``loss_parallel``), so no rank ever holds
the whole ``[tokens, vocab]`` logits.

Mixture-of-experts layers (as Megatron-Core runs them with sequence parallelism): the MoE block
works on this rank's sequence shard as a plain tensor. The router is replicated and runs on
the local tokens (its gradient is summed over TP by DTensor); the shared expert is split like
a dense MLP over the all-gathered tokens and reduce-scattered back; the routed experts are
left to :mod:`llmb.engine.parallel.expert` (EP all-to-all, ETP splits).
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
        # Each rank keeps its vocabulary shard of the logits (plain, so pipeline stages pass
        # plain tensors); the trainer's loss is vocab-parallel.
        top["output"] = ColwiseParallel(input_layouts=Shard(1), output_layouts=Shard(-1), use_local_output=True)
    elif model.norm is not None:
        raise LlmbError("tensor parallelism with tied embeddings is not implemented")
    if top:
        parallelize_module(model, tp_mesh, top)
    for block in model.layers.values():
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
        }
        ff = block.feed_forward
        if isinstance(ff, MoE):
            plan |= _moe_plan(ff)
        else:
            plan |= _mlp_plan("feed_forward", ff, seq_dim=1)
        parallelize_module(block, tp_mesh, plan)


def _mlp_plan(name: str, mlp, seq_dim: int) -> dict:
    """A dense (or shared-expert) MLP: all-gather the sequence shards, column-split w1/w3,
    row-split w2, reduce-scatter the output back to sequence shards."""
    plan = {
        name: PrepareModuleInput(input_layouts=(Shard(seq_dim),), desired_input_layouts=(Replicate(),)),
        f"{name}.w1": ColwiseParallel(),
        f"{name}.w2": RowwiseParallel(output_layouts=Shard(seq_dim)),
    }
    if mlp.w3 is not None:
        plan[f"{name}.w3"] = ColwiseParallel()
    return plan


def _moe_plan(moe: MoE) -> dict:
    plan = {
        # The block sees this rank's sequence shard [batch, seq/TP, dim] as a plain tensor; its
        # output is that shard of the (plain, sequence-sharded) residual stream.
        "feed_forward": PrepareModuleInput(
            input_layouts=(Shard(1),), desired_input_layouts=(Shard(1),), use_local_output=True
        ),
        # Flattened local tokens [tokens/TP, dim] are a shard along dim 0.
        "feed_forward.router": SequenceParallel(sequence_dim=0, use_local_output=True),
    }
    if moe.shared is not None:
        plan |= _mlp_plan("feed_forward.shared", moe.shared, seq_dim=0)
    return plan
