"""A decoder-only transformer covering the catalog's families.

========  ==========  ===========================  ==========
family    norm        MLP                          MoE
========  ==========  ===========================  ==========
llama     RMSNorm     SwiGLU (gated)               no
nemotron  LayerNorm   squared ReLU (not gated)     no
llama4    RMSNorm     SwiGLU                       on the layers ``ModelSpec.is_moe_layer``
========  ==========  ===========================  ==========

Attention is grouped-query attention with rotary position embeddings (rotate-half layout),
computed by :class:`CausalAttention` through ``F.scaled_dot_product_attention``. Layers live
in an ``nn.ModuleDict`` keyed by their global index, so a pipeline stage is this model with
some layers deleted and parameter names stay the same on every layout. ``tok_embeddings``,
``norm`` and ``output`` may be ``None`` on middle pipeline stages.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llmb.catalog.schema import ModelSpec
from llmb.engine.models.init import SLICES_ATTR, fill_, seeded_normal_
from llmb.engine.models.layers import FeedForward, make_norm
from llmb.engine.models.moe import MoE

INIT_STD = 0.02


class RotaryEmbedding(nn.Module):
    """cos/sin tables ``[max_seq, head_dim]``; ``forward()`` returns the rows of the
    positions this rank holds: all of them here. Attention slices the first ``seq`` rows.

    Context parallelism replaces this module with one that returns the rows of the positions
    a rank holds (not contiguous with load balancing).
    """

    def __init__(self, head_dim: int, max_seq: int, theta: float):
        super().__init__()
        self.head_dim, self.max_seq, self.theta = head_dim, max_seq, theta
        self.register_buffer("cos", torch.empty(max_seq, head_dim), persistent=False)
        self.register_buffer("sin", torch.empty(max_seq, head_dim), persistent=False)

    @torch.no_grad()
    def init_buffers(self) -> None:
        inv = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim))
        angles = torch.outer(torch.arange(self.max_seq, dtype=torch.float64), inv)
        angles = torch.cat([angles, angles], dim=-1)
        self.cos.copy_(angles.cos().to(self.cos.device, self.cos.dtype))
        self.sin.copy_(angles.sin().to(self.sin.device, self.sin.dtype))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos, self.sin


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: ``[batch, heads, seq, head_dim]``; cos/sin: ``[seq, head_dim]``."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class CausalAttention(nn.Module):
    """The attention core: causal SDPA over ``[batch, heads, seq, head_dim]`` with GQA.

    A parameter-free module so that context parallelism can swap it from outside.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1]
        )


class UpcastAttention(nn.Module):
    """Runs an attention core in fp32 on lower-precision inputs and casts the output back.

    Used for bf16 runs on CPU (:func:`upcast_attention_on_cpu`): torch's CPU flash-attention
    kernel is about twice as fast in fp32 as in bf16 on AVX-512 CPUs without AMX (measured
    here: 94 against 182 ms for a causal forward + backward of 8x8x512x64), and fp32 scores
    are at least as accurate. GPU runs keep bf16 attention (the fast kernels are bf16).
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = self.inner(q.float(), k.float(), v.float())
        return out.to(q.dtype)


def upcast_attention_on_cpu(model: nn.Module) -> None:
    """Wrap every attention core of ``model`` in :class:`UpcastAttention`."""
    for module in model.modules():
        if isinstance(module, Attention) and not isinstance(module.core, UpcastAttention):
            module.core = UpcastAttention(module.core)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int):
        super().__init__()
        self.head_dim = head_dim
        self.wq = nn.Linear(dim, heads * head_dim, bias=False)
        self.wk = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.wv = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.wo = nn.Linear(heads * head_dim, dim, bias=False)
        self.core = CausalAttention()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds a slice of the heads.
        q = self.wq(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        # Sliced here, not in the caller: under sequence parallelism only the attention sees
        # the whole sequence.
        cos, sin = cos[:s], sin[:s]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = self.core(q, k, v)
        return self.wo(out.transpose(1, 2).reshape(b, s, -1))


class TransformerBlock(nn.Module):
    def __init__(self, spec: ModelSpec, index: int):
        super().__init__()
        h = spec.hidden
        self.attention_norm = make_norm(spec.norm, h)
        self.attention = Attention(h, spec.heads, spec.query_groups, spec.kv_channels)
        self.ffn_norm = make_norm(spec.norm, h)
        if spec.moe is not None and spec.is_moe_layer(index):
            m = spec.moe
            self.feed_forward: nn.Module = MoE(
                h, m.num_experts, m.top_k, m.expert_ffn_hidden, spec.activation,
                m.shared_experts, m.shared_expert_ffn_hidden,
            )
        else:
            self.feed_forward = FeedForward(h, spec.ffn_hidden, spec.activation)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    """Token ids ``[batch, seq]`` -> logits ``[batch, seq, vocab]`` (pipeline stages: hidden
    states in and/or out)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.tok_embeddings: nn.Embedding | None = nn.Embedding(spec.vocab, spec.hidden)
        self.rope = RotaryEmbedding(spec.kv_channels, spec.seq_len, spec.rope_theta)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(spec, i) for i in range(spec.layers)})
        self.norm: nn.Module | None = make_norm(spec.norm, spec.hidden)
        self.output: nn.Linear | None = (
            None if spec.tied_embeddings else nn.Linear(spec.hidden, spec.vocab, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tok_embeddings is not None:
            x = self.tok_embeddings(x)
        cos, sin = self.rope()
        for layer in self.layers.values():
            x = layer(x, cos, sin)
        if self.norm is None:
            return x
        x = self.norm(x)
        if self.output is not None:
            return self.output(x)
        if self.tok_embeddings is not None:  # tied embeddings
            return F.linear(x, self.tok_embeddings.weight)
        return x

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """Initialize every parameter this rank holds (after ``to_empty``), independently of
        how the model is sharded: see :mod:`llmb.engine.models.init`.

        Linear and embedding weights ~ N(0, 0.02^2); the output projections of each residual
        branch (``wo``, ``w2``) use 0.02 / sqrt(2 * layers) (GPT-2 style); norms start at 1
        (bias 0).
        """
        self.rope.init_buffers()
        residual_std = INIT_STD / math.sqrt(2 * self.spec.layers)
        for module_name, module in self.named_modules():
            slices = getattr(module, SLICES_ATTR, {})
            for leaf, p in module.named_parameters(recurse=False):
                # torch.compile wraps blocks; names must not depend on it.
                name = f"{module_name}.{leaf}".replace("._orig_mod", "")
                owner = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
                place = slices.get(leaf)
                if "norm" in owner:
                    fill_(p, 1.0 if leaf == "weight" else 0.0)
                elif owner in ("wo", "w2") or leaf == "w2":
                    seeded_normal_(p, name, seed, residual_std, place)
                else:
                    seeded_normal_(p, name, seed, INIT_STD, place)


def build_model(spec: ModelSpec, device: torch.device | str = "meta") -> Transformer:
    """The model on ``device`` (``meta`` by default: no memory, to be sharded then
    materialized)."""
    with torch.device(device):
        return Transformer(spec)
