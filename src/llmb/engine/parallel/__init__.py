"""Parallelism applied to the plain models from outside, over a mesh built from the layout.

:func:`build_model_parts` is the one place that orders it (as torchtitan does): cut pipeline
chunks on ``meta`` -> tensor/sequence parallel -> context parallel (-> fp32 attention cores for
bf16 on CPU) -> expert parallel -> FSDP
(or DDP) -> materialize this rank's shards (``to_empty`` + ``init_weights``) -> pipeline
schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from llmb.catalog.schema import ModelSpec
from llmb.engine.models.transformer import Transformer, build_model, upcast_attention_on_cpu
from llmb.engine.parallel.context import apply_cp, refresh_cp_buffers
from llmb.engine.parallel.data_parallel import apply_ddp, apply_fsdp
from llmb.engine.parallel.expert import apply_ep, tag_expert_params
from llmb.engine.parallel.mesh import Parallel, ParallelDims, build_parallel
from llmb.engine.parallel.pipeline import build_chunk, build_schedule, chunk_ids
from llmb.engine.parallel.tensor import apply_tp
from llmb.errors import LlmbError
from llmb.plan.layout import DerivedLayout

__all__ = ["ModelParts", "Parallel", "ParallelDims", "build_model_parts", "build_parallel"]


@dataclass
class ModelParts:
    """This rank's share of the model."""

    modules: list[Transformer]  # the chunks (unwrapped)
    runnable: list[nn.Module]  # what to call (DDP-wrapped when DDP is used)
    schedule: object | None = None
    expert_params: list[nn.Parameter] = field(default_factory=list)
    fsdp: bool = False
    ddp: bool = False
    low_precision_params: bool = False  # bf16 weights held by the model (no FSDP)
    is_first_stage: bool = True
    is_last_stage: bool = True

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules for p in m.parameters()]


@torch.no_grad()
def cast_parameters(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast every parameter of ``module`` to ``dtype`` in place (same Parameter objects).

    ``p.data = p.data.to(dtype)`` is not enough for a DTensor (tensor-parallel weights): it
    changes the wrapper's dtype and leaves the local shard in the old one, so a bf16 TP run
    computed in fp32 under bf16 labels (and the fused RMSNorm refused the "bf16" weight with
    an fp32 input). DTensors are swapped whole, as ``nn.Module.to`` does with tensor
    subclasses; buffers (the rotary tables) are left alone."""
    for p in module.parameters():
        if p.dtype == dtype:
            continue
        if isinstance(p, DTensor):
            torch.utils.swap_tensors(p, nn.Parameter(p.detach().to(dtype), requires_grad=p.requires_grad))
        else:
            p.data = p.data.to(dtype)


def builtin_cp(device: torch.device, dims: ParallelDims) -> bool:
    """Whether CP uses torch's built-in context parallelism (CUDA without PP; untested here)
    rather than the hand-written K/V all-gather."""
    return device.type == "cuda" and dims.cp > 1 and dims.pp == 1


def _check(spec: ModelSpec, dims: ParallelDims, dp_mode: str) -> None:
    if dims.tp > 1 and spec.query_groups % dims.tp:
        raise LlmbError(
            f"query groups ({spec.query_groups}) must be divisible by TP ({dims.tp}) in the llmb "
            "engine (KV-head replication is not implemented)"
        )
    if spec.tied_embeddings and dims.pp > 1:
        raise LlmbError("tied embeddings with pipeline parallelism are not implemented")
    if dp_mode == "ddp" and (dims.pp > 1 or dims.tp > 1 or dims.ep > 1 or dims.cp > 1):
        raise LlmbError("DDP is supported for pure data parallelism only; use FSDP (the default)")


def build_model_parts(
    spec: ModelSpec,
    derived: DerivedLayout,
    par: Parallel,
    device: torch.device,
    dtype: str,
    seed: int,
    dp_mode: str = "fsdp",
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> ModelParts:
    """Build, parallelize and initialize this rank's model chunks."""
    dims = par.dims
    _check(spec, dims, dp_mode)
    compute_dtype = torch.bfloat16 if dtype in ("bf16", "fp8") else torch.float32
    if dims.pp > 1:
        ids = chunk_ids(par.pp_rank, dims.pp, derived.vp)
        modules = [build_chunk(spec, derived.layers_per_chunk, c) for c in ids]
    else:
        ids, modules = [0], [build_model(spec, "meta")]
    use_fsdp = dp_mode == "fsdp" and dims.dp_cp > 1
    experts: list[nn.Parameter] = []
    if dtype == "fp8":
        from llmb.engine.fp8 import convert_to_fp8

        convert_to_fp8(modules)
    for m in modules:
        if dims.tp > 1:
            apply_tp(m, par.sub("tp"), fp8=dtype == "fp8")
        if dims.cp > 1 and not builtin_cp(device, dims):
            apply_cp(m, par.group("cp"), dims.cp, par.cp_rank)
        if device.type == "cpu" and compute_dtype == torch.bfloat16:
            upcast_attention_on_cpu(m)
        chunk_experts = apply_ep(m, par) if dims.experts_split else []
        if use_fsdp:
            apply_fsdp(m, par.sub("dp_cp"), compute_dtype, ignored=set(chunk_experts))
        m.to_empty(device=device)
        m.init_weights(seed)
        refresh_cp_buffers(m)
        experts += tag_expert_params(m)
    low_precision = not use_fsdp and compute_dtype != torch.float32
    if low_precision:
        for m in modules:
            cast_parameters(m, compute_dtype)
    runnable: list[nn.Module] = list(modules)
    ddp = dp_mode == "ddp" and dims.dp > 1
    if ddp:
        runnable = [apply_ddp(modules[0], par.group("dp"))]
    parts = ModelParts(
        modules=modules, runnable=runnable, expert_params=experts, fsdp=use_fsdp, ddp=ddp,
        low_precision_params=low_precision,
        is_first_stage=par.pp_rank == 0, is_last_stage=par.pp_rank == dims.pp - 1,
    )
    if dims.pp > 1:
        if loss_fn is None:
            raise ValueError("pipeline parallelism needs the loss function")
        parts.schedule = build_schedule(
            modules, ids, dims.pp * derived.vp, derived.ga, loss_fn, par.group("pp"), device
        )
    return parts
