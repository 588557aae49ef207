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

from dataclasses import dataclass

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


@dataclass(frozen=True)
class _Styles:
    """The parallel styles of a run's layer linears: torch's, or torchao's float8 ones (FP8
    runs: inputs cast to float8 before their all-gather, on Float8Linear modules)."""

    col: type = ColwiseParallel
    row: type = RowwiseParallel
    prepare: type = PrepareModuleInput

    def prepare_input(self, first_linear: str, **kwargs):
        if self.prepare is PrepareModuleInput:
            return PrepareModuleInput(**kwargs)
        return self.prepare(fwd_config_submodule_fqn=first_linear, **kwargs)


def _styles(fp8: bool) -> _Styles:
    if not fp8:
        return _Styles()
    # GPU-only (torchao float8 needs CUDA); never run on the CPU-only development machine.
    from torchao.float8.float8_tensor_parallel import (
        Float8ColwiseParallel,
        Float8RowwiseParallel,
        PrepareFloat8ModuleInput,
    )

    return _Styles(Float8ColwiseParallel, Float8RowwiseParallel, PrepareFloat8ModuleInput)


def apply_tp(model: Transformer, tp_mesh: DeviceMesh, fp8: bool = False) -> None:
    """Shard ``model`` (or a pipeline stage of it) over ``tp_mesh`` in place. ``fp8``: the
    layer linears are torchao Float8Linear modules (the output layer and router stay bf16)."""
    st = _styles(fp8)
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
            "attention": st.prepare_input(
                "wq", input_layouts=(Shard(1), None, None), desired_input_layouts=(Replicate(), None, None)
            ),
            "attention.wq": st.col(),
            "attention.wk": st.col(),
            "attention.wv": st.col(),
            "attention.wo": st.row(output_layouts=Shard(1)),
            "ffn_norm": SequenceParallel(),
        }
        if block.post_attention_norm is not None:  # Grok-1's norms on the block outputs
            plan |= {"post_attention_norm": SequenceParallel(use_local_output=True),
                     "post_ffn_norm": SequenceParallel(use_local_output=True)}
        ff = block.feed_forward
        if isinstance(ff, MoE):
            plan |= _moe_plan(ff, st)
        else:
            plan |= _mlp_plan("feed_forward", ff, 1, st)
        parallelize_module(block, tp_mesh, plan)


def _mlp_plan(name: str, mlp, seq_dim: int, st: _Styles) -> dict:
    """A dense (or shared-expert) MLP: all-gather the sequence shards, column-split w1/w3,
    row-split w2, reduce-scatter the output back to sequence shards."""
    plan = {
        name: st.prepare_input("w1", input_layouts=(Shard(seq_dim),), desired_input_layouts=(Replicate(),)),
        f"{name}.w1": st.col(),
        f"{name}.w2": st.row(output_layouts=Shard(seq_dim)),
    }
    if mlp.w3 is not None:
        plan[f"{name}.w3"] = st.col()
    return plan


def _moe_plan(moe: MoE, st: _Styles) -> dict:
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
        plan |= _mlp_plan("feed_forward.shared", moe.shared, 0, st)
    return plan
