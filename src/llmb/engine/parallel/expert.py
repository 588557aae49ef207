"""Expert parallelism: the routed experts of every MoE layer are split over the EP group;
tokens travel to their experts' ranks and back with all-to-all (dropless: the splits are
whatever the router chose).

EP is carved from the data-parallel ranks (ETP = 1): each EP rank routes its own tokens.
Expert weights are plain local parameters ``[experts/EP, ...]`` tagged with their place in the
global tensor (for sharding-independent init); FSDP leaves them alone and their gradients are
summed over the expert-data-parallel group by :func:`reduce_expert_grads`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from llmb.engine.models.init import SLICES_ATTR
from llmb.engine.models.moe import MoE, activation_fn, expert_mlp
from llmb.engine.models.transformer import Transformer
from llmb.engine.parallel.collectives import all_to_all

EXPERT_ATTR = "_llmb_expert"


class ExpertParallelExperts(nn.Module):
    """Drop-in for :class:`~llmb.engine.models.moe.GroupedExperts` holding ``E/EP`` experts."""

    def __init__(self, experts: nn.Module, group: dist.ProcessGroup, ep: int, rank: int):
        super().__init__()
        self.group, self.ep, self.rank = group, ep, rank
        self.num_experts = experts.num_experts
        self.local_experts = experts.num_experts // ep
        self._act = activation_fn(experts.activation)
        first = rank * self.local_experts
        slices = {}
        for name in ("w1", "w2", "w3"):
            full = getattr(experts, name)
            if full is None:
                setattr(self, name, None)
                continue
            setattr(self, name, nn.Parameter(torch.empty_like(full[first : first + self.local_experts])))
            slices[name] = (tuple(full.shape), (first, 0, 0))
        setattr(self, SLICES_ATTR, slices)

    def forward(self, x: torch.Tensor, tokens_per_expert: list[int]) -> torch.Tensor:
        ep, local = self.ep, self.local_experts
        send_counts = torch.tensor(tokens_per_expert, dtype=torch.int64, device=x.device).view(ep, local)
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts, group=self.group)
        send_splits = send_counts.sum(1).tolist()
        recv_splits = recv_counts.sum(1).tolist()
        received = all_to_all(x, recv_splits, send_splits, self.group)
        # `received` is grouped by source rank, then by local expert: regroup by expert.
        expert_of = torch.repeat_interleave(
            torch.arange(local, device=x.device).repeat(ep), recv_counts.reshape(-1)
        )
        order = torch.argsort(expert_of, stable=True)
        out = expert_mlp(received[order], recv_counts.sum(0).tolist(), self.w1, self.w2, self.w3, self._act)
        restored = torch.empty_like(out).index_copy_(0, order, out)
        return all_to_all(restored, send_splits, recv_splits, self.group)


def apply_ep(model: Transformer, group: dist.ProcessGroup, ep: int, rank: int) -> list[nn.Parameter]:
    """Replace the experts of every MoE layer of ``model``; returns the expert parameters."""
    params: list[nn.Parameter] = []
    for block in model.layers.values():
        moe = block.feed_forward
        if isinstance(moe, MoE):
            moe.experts = ExpertParallelExperts(moe.experts, group, ep, rank)
            params += [p for p in moe.experts.parameters()]
    return params


def tag_expert_params(model: nn.Module) -> list[nn.Parameter]:
    """Mark (again, after ``to_empty`` replaced them) and return the expert-parallel
    parameters of ``model``."""
    params = []
    for module in model.modules():
        if isinstance(module, ExpertParallelExperts):
            for p in module.parameters():
                setattr(p, EXPERT_ATTR, True)
                params.append(p)
    return params


@torch.no_grad()
def reduce_expert_grads(params: list[nn.Parameter], edp_group: dist.ProcessGroup | None) -> None:
    """Sum expert gradients over the ranks holding the same experts (SUM: the loss is already
    normalized by the global token count)."""
    if edp_group is None:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM, group=edp_group)
