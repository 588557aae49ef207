"""A decoder-only transformer covering the catalog's families.

========  ==========  ===========================  ==========
family    norm        MLP                          MoE
========  ==========  ===========================  ==========
llama     RMSNorm     SwiGLU (gated)               no
nemotron  LayerNorm   squared ReLU (not gated)     no
llama4    RMSNorm     SwiGLU                       on the layers ``ModelSpec.is_moe_layer``
grok      RMSNorm     GeGLU                        every layer, softmax top-2 routing
========  ==========  ===========================  ==========

Attention is grouped-query attention with rotary position embeddings (rotate-half layout),
computed by :class:`CausalAttention` through ``F.scaled_dot_product_attention``. The variants
the spec names: Llama 3.1's RoPE scaling (``rope_scaling``), partial RoPE (Nemotron-4's
``rotary_percent`` 0.5), NoPE layers (Llama 4's ``nope_layer_interval``), zero-centred norm
gammas (Nemotron-4's layernorm1p), Grok-1's soft-capped attention scores
(``attn_logit_softcap``), embedding and logit multipliers (``embedding_multiplier``,
``output_multiplier``) and norms after the attention and MoE blocks (``sandwich_norm``) and,
in :mod:`~llmb.engine.models.moe`, Llama 4's router score on the expert's input and Mixtral /
Grok-1 softmax routing. Layers live
in an ``nn.ModuleDict`` keyed by their global index, so a pipeline stage is this model with
some layers deleted and parameter names stay the same on every layout. ``tok_embeddings``,
``norm`` and ``output`` may be ``None`` on middle pipeline stages.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llmb.catalog.schema import ModelSpec, RopeScaling
from llmb.engine.models.init import SLICES_ATTR, fill_, seeded_normal_
from llmb.engine.models.layers import FeedForward, Norm, make_norm
from llmb.engine.models.moe import MoE

INIT_STD = 0.02


class RotaryEmbedding(nn.Module):
    """cos/sin tables ``[max_seq, rotary_dim]``; ``forward()`` returns the rows of the
    positions this rank holds: all of them here. Attention slices the first ``seq`` rows.

    ``rotary_dim`` < ``head_dim`` is partial RoPE (Nemotron-4 rotates the first half of each
    head's channels; the frequencies are those of a ``rotary_dim``-wide head, as in Megatron
    and transformers). ``scaling`` is Llama 3.1's frequency-dependent stretch
    (:func:`llama3_inv_freq`).

    Context parallelism replaces this module with one that returns the rows of the positions
    a rank holds (not contiguous with load balancing).
    """

    def __init__(self, rotary_dim: int, max_seq: int, theta: float, scaling: RopeScaling | None = None):
        super().__init__()
        self.rotary_dim, self.max_seq, self.theta, self.scaling = rotary_dim, max_seq, theta, scaling
        self.register_buffer("cos", torch.empty(max_seq, rotary_dim), persistent=False)
        self.register_buffer("sin", torch.empty(max_seq, rotary_dim), persistent=False)

    def inv_freq(self) -> torch.Tensor:
        """Angular frequency (radians per position) of each rotated channel pair, float64."""
        d = self.rotary_dim
        inv = 1.0 / (self.theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        return inv if self.scaling is None else llama3_inv_freq(inv, self.scaling)

    @torch.no_grad()
    def init_buffers(self) -> None:
        angles = torch.outer(torch.arange(self.max_seq, dtype=torch.float64), self.inv_freq())
        angles = torch.cat([angles, angles], dim=-1)
        self.cos.copy_(angles.cos().to(self.cos.device, self.cos.dtype))
        self.sin.copy_(angles.sin().to(self.sin.device, self.sin.dtype))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos, self.sin


def llama3_inv_freq(inv_freq: torch.Tensor, s: RopeScaling) -> torch.Tensor:
    """Llama 3.1's RoPE scaling of ``inv_freq`` (radians per position).

    With ``r = original_context / wavelength``: frequencies with ``r >= high_freq_factor``
    (short wavelengths) are kept, those with ``r <= low_freq_factor`` divided by ``factor``,
    and in between the kept share ``(r - low) / (high - low)`` blends the two linearly.
    """
    ratio = s.original_context * inv_freq / (2 * math.pi)
    kept = ((ratio - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)).clamp(0.0, 1.0)
    return inv_freq * (kept + (1.0 - kept) / s.factor)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: ``[batch, heads, seq, head_dim]``; cos/sin: ``[seq, rotary_dim]``. Rotates the first
    ``rotary_dim`` channels of each head (rotate-half layout) and passes the rest through."""
    rot = cos.shape[-1]
    if rot < x.shape[-1]:
        return torch.cat([apply_rotary(x[..., :rot], cos, sin), x[..., rot:]], dim=-1)
    half = rot // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def softcapped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cap: float,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention with scores soft-capped as ``cap * tanh(score / cap)`` before the softmax
    (Grok-1), in fp32; ``mask`` [q_len, k_len] says which keys each query sees (causal when
    None). SDPA has no soft-cap, so the scores are materialised: proxies only."""
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    scores = cap * torch.tanh(scores / cap)
    if mask is None:
        mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v.float()).to(q.dtype)


class CausalAttention(nn.Module):
    """The attention core: causal SDPA over ``[batch, heads, seq, head_dim]`` with GQA, or
    with ``softcap`` the soft-capped scores of :func:`softcapped_attention`.

    A parameter-free module so that context parallelism can swap it from outside.
    """

    def __init__(self, softcap: float | None = None):
        super().__init__()
        self.softcap = softcap

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.softcap is not None:
            return softcapped_attention(q, k, v, self.softcap)
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
    """Grouped-query attention; ``use_rope=False`` is a NoPE layer (Llama 4's every 4th):
    no position information but the causal mask."""

    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int, use_rope: bool = True,
                 softcap: float | None = None):
        super().__init__()
        self.head_dim = head_dim
        self.use_rope = use_rope
        self.wq = nn.Linear(dim, heads * head_dim, bias=False)
        self.wk = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.wv = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.wo = nn.Linear(heads * head_dim, dim, bias=False)
        self.core = CausalAttention(softcap)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds a slice of the heads.
        q = self.wq(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        if self.use_rope:
            # Sliced here, not in the caller: under sequence parallelism only the attention
            # sees the whole sequence.
            cos, sin = cos[:s], sin[:s]
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = self.core(q, k, v)
        return self.wo(out.transpose(1, 2).reshape(b, s, -1))


class TransformerBlock(nn.Module):
    def __init__(self, spec: ModelSpec, index: int):
        super().__init__()
        h = spec.hidden
        self.attention_norm = make_norm(spec, h)
        self.attention = Attention(h, spec.heads, spec.query_groups, spec.kv_channels, spec.uses_rope(index),
                                   spec.attn_logit_softcap)
        self.ffn_norm = make_norm(spec, h)
        # Grok-1: a norm on each block's output too, before the residual add
        self.post_attention_norm = make_norm(spec, h) if spec.sandwich_norm else None
        self.post_ffn_norm = make_norm(spec, h) if spec.sandwich_norm else None
        if spec.moe is not None and spec.is_moe_layer(index):
            m = spec.moe
            self.feed_forward: nn.Module = MoE(
                h, m.num_experts, m.top_k, m.expert_ffn_hidden, spec.activation,
                m.shared_experts, m.shared_expert_ffn_hidden, m.apply_probs_on_input,
                m.router_score, m.normalize_top_k,
            )
        else:
            self.feed_forward = FeedForward(h, spec.ffn_hidden, spec.activation)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = self.attention(self.attention_norm(x), cos, sin)
        if self.post_attention_norm is not None:
            h = self.post_attention_norm(h)
        x = x + h
        h = self.feed_forward(self.ffn_norm(x))
        if self.post_ffn_norm is not None:
            h = self.post_ffn_norm(h)
        return x + h


class Transformer(nn.Module):
    """Token ids ``[batch, seq]`` -> logits ``[batch, seq, vocab]`` (pipeline stages: hidden
    states in and/or out)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.tok_embeddings: nn.Embedding | None = nn.Embedding(spec.vocab, spec.hidden)
        self.rope = RotaryEmbedding(spec.rotary_dim, spec.seq_len, spec.rope_theta, spec.rope_scaling)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(spec, i) for i in range(spec.layers)})
        self.norm: nn.Module | None = make_norm(spec, spec.hidden)
        self.output: nn.Linear | None = (
            None if spec.tied_embeddings else nn.Linear(spec.hidden, spec.vocab, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tok_embeddings is not None:
            x = self.tok_embeddings(x)
            if self.spec.embedding_multiplier is not None:
                x = x * self.spec.embedding_multiplier
        cos, sin = self.rope()
        for layer in self.layers.values():
            x = layer(x, cos, sin)
        if self.norm is None:
            return x
        x = self.norm(x)
        if self.output is not None:
            return self._scale_logits(self.output(x))
        if self.tok_embeddings is not None:  # tied embeddings
            return self._scale_logits(F.linear(x, self.tok_embeddings.weight))
        return x

    def _scale_logits(self, logits: torch.Tensor) -> torch.Tensor:
        m = self.spec.output_multiplier
        return logits if m is None else logits * m

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """Initialize every parameter this rank holds (after ``to_empty``), independently of
        how the model is sharded: see :mod:`llmb.engine.models.init`.

        Linear and embedding weights ~ N(0, 0.02^2); the output projections of each residual
        branch (``wo``, ``w2``) use 0.02 / sqrt(2 * layers) (GPT-2 style); norms start at 1
        (bias 0; a zero-centred gamma's stored weight starts at 0).
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
                if isinstance(module, Norm):
                    fill_(p, module.weight_init if leaf == "weight" else 0.0)
                elif owner in ("wo", "w2") or leaf == "w2":
                    seeded_normal_(p, name, seed, residual_std, place)
                else:
                    seeded_normal_(p, name, seed, INIT_STD, place)


def build_model(spec: ModelSpec, device: torch.device | str = "meta") -> Transformer:
    """The model on ``device`` (``meta`` by default: no memory, to be sharded then
    materialized)."""
    with torch.device(device):
        return Transformer(spec)
