"""Expert parallelism (EP) and expert tensor parallelism (ETP) for the routed experts.

Every rank routes its own tokens (its sequence-parallel shard under TP). Dispatch: an
all-to-all in the EP group sends each token to the EP rank holding its expert; under ETP the
tokens an ETP group received are then all-gathered in it, every ETP rank runs its slice of the
expert FFN width (columns of ``w1``/``w3``, rows of ``w2``) on all of them, and the partial
outputs are reduce-scattered back; a second all-to-all returns them to their tokens (dropless:
the splits are whatever the router chose). This is Megatron-Core's ``alltoall`` dispatcher
with ``expert_tensor_parallel_size``.

Expert weights are plain local parameters ``[experts/EP, ..., width/ETP, ...]`` tagged with
their place in the global tensor (for sharding-independent init); FSDP leaves them alone and
their gradients are summed over the expert-data-parallel group by
:func:`reduce_expert_grads`. The groups come from :mod:`llmb.engine.parallel.mesh`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from llmb.engine.models.init import SLICES_ATTR
from llmb.engine.models.layers import activation_fn
from llmb.engine.models.moe import MoE, expert_mlp
from llmb.engine.models.transformer import Transformer
from llmb.engine.parallel.collectives import all_gather_v, all_to_all, reduce_scatter_v
from llmb.engine.parallel.mesh import Parallel

EXPERT_ATTR = "_llmb_expert"


class ExpertParallelExperts(nn.Module):
    """Drop-in for :class:`~llmb.engine.models.moe.GroupedExperts` holding this rank's slice:
    experts ``[ep_rank * E/EP, (ep_rank + 1) * E/EP)``, FFN columns ``etp_rank`` of ``ETP``."""

    def __init__(self, experts: nn.Module, par: Parallel):
        super().__init__()
        dims = par.dims
        self.ep, self.etp = dims.ep, dims.etp
        self.ep_group, self.etp_group = par.ep_group, par.etp_group
        self.num_experts = experts.num_experts
        self.local_experts = experts.num_experts // self.ep
        self._act = activation_fn(experts.activation)
        first = par.ep_rank * self.local_experts
        width = experts.w1.shape[2] // self.etp
        col = par.etp_rank * width
        rows = slice(first, first + self.local_experts)
        cols = slice(col, col + width)
        slices = {}
        for name in ("w1", "w2", "w3"):
            full = getattr(experts, name)
            if full is None:
                setattr(self, name, None)
                continue
            # w1, w3: [E, dim, hidden] split on hidden; w2: [E, hidden, dim] split on hidden.
            part, offset = (full[rows, cols, :], (first, col, 0)) if name == "w2" else (full[rows, :, cols], (first, 0, col))
            setattr(self, name, nn.Parameter(torch.empty_like(part)))
            slices[name] = (tuple(full.shape), offset)
        setattr(self, SLICES_ATTR, slices)

    def forward(self, x: torch.Tensor, tokens_per_expert: list[int]) -> torch.Tensor:
        ep, local = self.ep, self.local_experts
        # counts[source, e]: tokens of local expert e that arrive from each source rank.
        send_counts = torch.tensor(tokens_per_expert, dtype=torch.int64, device=x.device).view(ep, local)
        if ep > 1:
            counts = torch.empty_like(send_counts)
            dist.all_to_all_single(counts, send_counts, group=self.ep_group)
            send_splits = send_counts.sum(1).tolist()
            recv_splits = counts.sum(1).tolist()
            x = all_to_all(x, recv_splits, send_splits, self.ep_group)
        else:
            counts = send_counts
        if self.etp > 1:
            gathered = [torch.empty_like(counts) for _ in range(self.etp)]
            dist.all_gather(gathered, counts, group=self.etp_group)
            counts = torch.cat(gathered)  # [ETP * sources, local]
            sizes = counts.view(self.etp, -1).sum(1).tolist()  # one host sync, not ETP
            x = all_gather_v(x, sizes, self.etp_group)
        # `x` is grouped by source, then by local expert: regroup by expert.
        expert_of = torch.repeat_interleave(
            torch.arange(local, device=x.device).repeat(counts.shape[0]), counts.reshape(-1)
        )
        order = torch.argsort(expert_of, stable=True)
        out = expert_mlp(x[order], counts.sum(0).tolist(), self.w1, self.w2, self.w3, self._act)
        out = torch.empty_like(out).index_copy_(0, order, out)
        if self.etp > 1:
            out = reduce_scatter_v(out, sizes, self.etp_group)
        if ep > 1:
            out = all_to_all(out, send_splits, recv_splits, self.ep_group)
        return out


def apply_ep(model: Transformer, par: Parallel) -> list[nn.Parameter]:
    """Replace the experts of every MoE layer of ``model`` by this rank's slice; returns the
    expert parameters."""
    params: list[nn.Parameter] = []
    for block in model.layers.values():
        moe = block.feed_forward
        if isinstance(moe, MoE):
            moe.experts = ExpertParallelExperts(moe.experts, par)
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
