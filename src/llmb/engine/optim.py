"""Optimizer, learning-rate schedule, global gradient norm and clipping.

* AdamW (betas 0.9/0.95, as the reference recipes), linear warm-up then cosine decay to
  ``min_lr_ratio * lr`` at the last step.
* bf16 without FSDP: the model holds bf16 weights (no per-step casts in the forward) and
  :class:`MasterWeights` keeps fp32 copies that the optimizer updates. With FSDP the
  mixed-precision policy does that job instead.
* The gradient norm is global: over every shard (DTensor placements), expert-parallel slices
  and pipeline stage, reduced with SUM.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from llmb.engine.parallel.expert import EXPERT_ATTR


def lr_lambda(warmup_steps: int, total_steps: int, min_ratio: float):
    """Multiplier of the peak LR at optimizer step ``step`` (0-based)."""

    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


class MasterWeights:
    """fp32 master copies of low-precision parameters; ``optimizer`` works on the masters."""

    def __init__(self, params: list[nn.Parameter]):
        self.params = params
        self.masters = [nn.Parameter(p.detach().float().clone()) for p in params]

    @torch.no_grad()
    def grads_to_masters(self) -> None:
        for p, m in zip(self.params, self.masters):
            m.grad = None if p.grad is None else p.grad.float()

    @torch.no_grad()
    def masters_to_params(self) -> None:
        for p, m in zip(self.params, self.masters):
            p.copy_(m)


def build_optimizer(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]  # norms: no weight decay
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95), eps=1e-8,
    )


@torch.no_grad()
def align_grad_placements(params: list[nn.Parameter]) -> None:
    """Give every DTensor gradient its parameter's placements.

    Under tensor parallelism without FSDP, autograd can leave the gradient of a replicated
    parameter (the norms under sequence parallelism) as ``Partial`` sums, and that of the
    row-sharded embedding replicated. Redistributing (an all-reduce, or a local slice) makes
    the gradient norm and the optimizer see the true gradient.
    """
    for p in params:
        g = p.grad
        if isinstance(g, DTensor) and isinstance(p, DTensor) and g.placements != p.placements:
            p.grad = g.redistribute(p.device_mesh, p.placements)


@torch.no_grad()
def clip_grad_norm(
    params: list[nn.Parameter],
    max_norm: float,
    expert_groups: tuple[dist.ProcessGroup, ...] = (),
    pp_group: dist.ProcessGroup | None = None,
) -> float:
    """Clip gradients to a global L2 norm of ``max_norm`` (0 = no clipping); returns the norm
    before clipping. ``expert_groups``: where expert weights differ between ranks (EP, ETP)."""
    buckets: dict[tuple, list] = defaultdict(lambda: [None, None])
    for p in params:
        g = p.grad
        if g is None:
            continue
        if isinstance(g, DTensor):
            dims = tuple(i for i, pl in enumerate(g.placements) if not pl.is_replicate())
            groups = tuple(g.device_mesh.get_group(i) for i in dims)
            local = g.to_local()
        elif getattr(p, EXPERT_ATTR, False):
            groups, local = tuple(expert_groups), g
        else:
            groups, local = (), g
        key = tuple(id(x) for x in groups)
        buckets[key][0] = groups
        # fp32 accumulation inside the norm kernel (no upcast copy of the gradient), squared
        # in fp64; on the grad's device: NCCL reduces GPU tensors.
        sq = torch.linalg.vector_norm(local, dtype=torch.float32).double() ** 2
        buckets[key][1] = sq if buckets[key][1] is None else buckets[key][1] + sq
    device = next((p.grad.device for p in params if p.grad is not None), torch.device("cpu"))
    total = torch.zeros((), dtype=torch.float64, device=device)
    for groups, value in buckets.values():
        for group in groups:
            dist.all_reduce(value, op=dist.ReduceOp.SUM, group=group)
        total += value
    if pp_group is not None:
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=pp_group)
    norm = float(total.sqrt())
    if max_norm > 0 and norm > max_norm:
        coef = max_norm / (norm + 1e-6)
        for p in params:
            if p.grad is not None:
                (p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad).mul_(coef)
    return norm
