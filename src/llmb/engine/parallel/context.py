"""Context parallelism: each CP rank holds a slice of every sequence.

Load balancing (as Megatron and torch's built-in CP do): the sequence is cut into ``2*CP``
chunks and rank ``r`` holds chunks ``r`` and ``2*CP-1-r``, so every rank gets the same share of
the causal attention work.

CPU (gloo) path, hand-written because torch's built-in ``context_parallel`` has no CPU SDPA
sharding strategy: each attention layer all-gathers K and V over the CP group with an
autograd-aware collective (:func:`~llmb.engine.parallel.collectives.all_gather_dim`) and
applies an explicit causal mask built from the global positions of queries and keys. Memory
for K/V grows to the whole sequence (fine for proxies; ring attention would avoid it).

CUDA path: :func:`builtin_context` wraps torch's ``context_parallel`` (ring attention over
SDPA). It cannot run on this CPU-only machine and is untested here.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from llmb.engine.models.transformer import Transformer, softcapped_attention
from llmb.engine.parallel.collectives import all_gather_dim


def cp_positions(seq_len: int, cp: int, rank: int) -> torch.Tensor:
    """Global positions (int64) held by CP rank ``rank``: chunks ``rank`` and ``2cp-1-rank``."""
    chunk = seq_len // (2 * cp)
    first = torch.arange(rank * chunk, (rank + 1) * chunk)
    second = torch.arange((2 * cp - 1 - rank) * chunk, (2 * cp - rank) * chunk)
    return torch.cat([first, second])


class ContextParallelRope(nn.Module):
    """Returns the rotary tables at this rank's global positions."""

    def __init__(self, inner: nn.Module, positions: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("positions", positions.clone(), persistent=False)

    def init_buffers(self) -> None:
        self.inner.init_buffers()

    def forward(self):
        cos, sin = self.inner()
        return cos[self.positions], sin[self.positions]


class ContextParallelAttention(nn.Module):
    """Causal attention of local queries against K/V gathered from the whole CP group."""

    def __init__(self, group: dist.ProcessGroup, positions: torch.Tensor, all_positions: torch.Tensor,
                 softcap: float | None = None):
        super().__init__()
        self.group = group
        self.softcap = softcap  # Grok-1's soft-capped scores (softcapped_attention)
        # Query i may see key j iff pos_k[j] <= pos_q[i]; same mask for every layer.
        self.register_buffer(
            "mask", all_positions.unsqueeze(0) <= positions.unsqueeze(1), persistent=False
        )

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k_all = all_gather_dim(k, 2, self.group)
        v_all = all_gather_dim(v, 2, self.group)
        if self.softcap is not None:
            return softcapped_attention(q, k_all, v_all, self.softcap, self.mask)
        return F.scaled_dot_product_attention(
            q, k_all, v_all, attn_mask=self.mask, enable_gqa=q.shape[1] != k.shape[1]
        )


def apply_cp(model: Transformer, group: dist.ProcessGroup, cp: int, rank: int) -> None:
    """Swap the rotary tables and attention cores of ``model`` for their CP versions (before
    ``to_empty``: the buffers are rebuilt on the target device there)."""
    seq = model.spec.seq_len
    device = model.rope.cos.device
    pos = cp_positions(seq, cp, rank)
    all_pos = torch.cat([cp_positions(seq, cp, r) for r in range(cp)])
    # Position/mask buffers are small and needed on meta models too: build them for real on
    # CPU; to_empty() would wipe them, so the caller re-runs refresh_cp_buffers after it.
    model.rope = ContextParallelRope(model.rope, pos.to(device))
    for block in model.layers.values():
        block.attention.core = ContextParallelAttention(group, pos.to(device), all_pos.to(device),
                                                        softcap=getattr(block.attention.core, "softcap", None))
    model._llmb_cp = (cp, rank)  # remembered for refresh_cp_buffers


@torch.no_grad()
def refresh_cp_buffers(model: Transformer) -> None:
    """Refill CP position/mask buffers after ``to_empty`` (which leaves them uninitialized)."""
    if not hasattr(model, "_llmb_cp"):
        return
    cp, rank = model._llmb_cp
    seq = model.spec.seq_len
    pos = cp_positions(seq, cp, rank)
    all_pos = torch.cat([cp_positions(seq, cp, r) for r in range(cp)])
    model.rope.positions.copy_(pos)
    mask = all_pos.unsqueeze(0) <= pos.unsqueeze(1)
    for module in model.modules():  # the cores may be wrapped (fp32 attention on CPU)
        if isinstance(module, ContextParallelAttention):
            module.mask.copy_(mask)


def slice_batch(tokens: torch.Tensor, labels: torch.Tensor, cp: int, rank: int):
    """This CP rank's share of a micro-batch (``[batch, seq]`` -> ``[batch, seq/cp]``)."""
    if cp == 1:
        return tokens, labels
    pos = cp_positions(tokens.shape[1], cp, rank)
    return tokens[:, pos].contiguous(), labels[:, pos].contiguous()


def builtin_context(cp_mesh, model: Transformer, tokens: torch.Tensor, labels: torch.Tensor):
    """CUDA only (untested here): torch's built-in context parallelism for one micro-batch.

    Shards ``tokens``, ``labels`` and the rotary tables in place along the sequence and routes
    SDPA through ring attention while the context is active.
    """
    if cp_mesh is None or cp_mesh.size() == 1:
        return contextlib.nullcontext()
    from torch.distributed.tensor.experimental import context_parallel

    return context_parallel(
        cp_mesh,
        buffers=[tokens, labels, model.rope.cos, model.rope.sin],
        buffer_seq_dims=[1, 1, 0, 0],
        no_restore_buffers={tokens, labels},
    )
