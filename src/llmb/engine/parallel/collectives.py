"""Autograd-aware collectives that work on gloo (CPU) as well as NCCL.

Reductions always use SUM (gloo's AVG has been reported to sum); callers divide themselves.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class _AllGatherDim(torch.autograd.Function):
    """Concatenate every rank's tensor along ``dim``; backward sums the gradient over ranks
    and keeps this rank's slice (all-reduce + slice: gloo has no reduce-scatter)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.dim, ctx.group = dim, group
        ctx.rank, ctx.size = dist.get_rank(group), dist.get_world_size(group)
        parts = [torch.empty_like(x) for _ in range(ctx.size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad.chunk(ctx.size, dim=ctx.dim)[ctx.rank].contiguous(), None, None


def all_gather_dim(x: torch.Tensor, dim: int, group: dist.ProcessGroup) -> torch.Tensor:
    return _AllGatherDim.apply(x, dim, group)


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` along dim 0 with uneven splits; backward sends gradients back."""

    @staticmethod
    def forward(ctx, x, out_splits: list[int], in_splits: list[int], group):
        ctx.out_splits, ctx.in_splits, ctx.group = out_splits, in_splits, group
        out = x.new_empty((sum(out_splits), *x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        back = grad.new_empty((sum(ctx.in_splits), *grad.shape[1:]))
        dist.all_to_all_single(back, grad.contiguous(), ctx.in_splits, ctx.out_splits, group=ctx.group)
        return back, None, None, None


def all_to_all(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:
    return _AllToAll.apply(x, out_splits, in_splits, group)


def all_gather_v(x: torch.Tensor, sizes: list[int], group: dist.ProcessGroup) -> torch.Tensor:
    """Concatenate every rank's rows along dim 0 (rank ``r`` holds ``sizes[r]`` of them);
    backward sums each row's gradient over the ranks. An all-to-all that sends every rank the
    whole local tensor: gloo has no uneven all-gather."""
    n = len(sizes)
    return all_to_all(x.repeat(n, *([1] * (x.dim() - 1))), sizes, [x.shape[0]] * n, group)


def reduce_scatter_v(y: torch.Tensor, sizes: list[int], group: dist.ProcessGroup) -> torch.Tensor:
    """The inverse of :func:`all_gather_v`: ``y`` holds every rank's rows (``sizes[r]`` for rank
    ``r``), partial sums on each rank; returns this rank's rows summed over the ranks (in rank
    order: deterministic)."""
    n, mine = len(sizes), sizes[dist.get_rank(group)]
    parts = all_to_all(y, [mine] * n, sizes, group)
    return parts.view(n, mine, *y.shape[1:]).sum(0)
