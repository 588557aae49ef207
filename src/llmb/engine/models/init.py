"""Sharding-independent weight initialization.

Every element's initial value is a function of ``(seed, parameter name, global element
index)`` only, so one process, FSDP shards, TP shards, pipeline stages and expert-parallel
ranks all start from bit-identical weights. Each rank generates just the rows its shard
touches: a large model never exists whole on one rank.

Values are drawn in blocks of :data:`ROWS_PER_BLOCK` rows of the parameter seen as a 2-D
``[prod(shape[:-1]), shape[-1]]`` matrix, each block from its own CPU generator seeded from
the block's identity.
"""

from __future__ import annotations

import zlib

import torch
from torch.distributed.tensor import DTensor

ROWS_PER_BLOCK = 256

# A module whose plain (non-DTensor) parameters hold a slice of a larger logical tensor, e.g.
# the local experts under expert parallelism, maps their names to (global shape, offset) in
# this attribute. (On the module, not the parameter: ``to_empty`` replaces parameters.)
SLICES_ATTR = "_llmb_param_slices"


def _block_seed(seed: int, name: str, block: int) -> int:
    return zlib.crc32(f"{seed}/{name}/{block}".encode()) & 0x7FFF_FFFF_FFFF


def local_box(param: torch.Tensor, place=None) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]:
    """(local tensor, global shape, global offset of the local box)."""
    if isinstance(param, DTensor):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        local = param.to_local()
        _, offset = compute_local_shape_and_global_offset(
            param.shape, param.device_mesh, param.placements
        )
        return local, tuple(param.shape), tuple(offset)
    if place is not None:
        return param, tuple(place[0]), tuple(place[1])
    return param, tuple(param.shape), (0,) * param.dim()


@torch.no_grad()
def seeded_normal_(param: torch.Tensor, name: str, seed: int, std: float, place=None) -> None:
    """Fill ``param`` (a plain tensor, a DTensor shard, or a slice at ``place`` = (global
    shape, global offset)) with N(0, std^2) values that depend only on ``seed``, ``name`` and
    each element's global index."""
    local, shape, offset = local_box(param, place)
    if local.numel() == 0:
        return
    if len(shape) == 1:
        shape, offset = (1, shape[0]), (0, offset[0])
        local_view = local.view(1, -1)
    else:
        local_view = local
    width = shape[-1]
    lead_shape = shape[:-1]
    # Global flat row index of every local row.
    grids = torch.meshgrid(
        *[torch.arange(o, o + n) for o, n in zip(offset[:-1], local_view.shape[:-1])], indexing="ij"
    )
    flat = torch.zeros_like(grids[0])
    for g, size in zip(grids, lead_shape):
        flat = flat * size + g
    flat = flat.reshape(-1)
    first, last = int(flat.min()), int(flat.max())
    blocks = []
    for b in range(first // ROWS_PER_BLOCK, last // ROWS_PER_BLOCK + 1):
        gen = torch.Generator().manual_seed(_block_seed(seed, name, b))
        blocks.append(torch.randn(ROWS_PER_BLOCK, width, generator=gen))
    rows = torch.cat(blocks)[flat - (first // ROWS_PER_BLOCK) * ROWS_PER_BLOCK]
    cols = rows[:, offset[-1] : offset[-1] + local_view.shape[-1]] * std
    local_view.copy_(cols.reshape(local_view.shape).to(local_view.device, local_view.dtype))


@torch.no_grad()
def fill_(param: torch.Tensor, value: float) -> None:
    local, _, _ = local_box(param)
    local.fill_(value)
