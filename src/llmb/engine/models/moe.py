"""Mixture-of-experts block (Llama 4 style): a linear router, top-k routing, routed experts
held as stacked weights, and optional always-on shared experts.

Routing is **dropless**: every token reaches all of its top-k experts whatever the load, so
results never depend on a capacity factor or on how tokens are split across ranks. (The
catalog's ``capacity_factor`` is not used by this engine; a capacity-based variant would drop
tokens and is not implemented.) The gate weight of a chosen expert is the sigmoid of its
router logit. It scales that expert's output by default, or its input with
``apply_probs_on_input`` (``MoESpec.apply_probs_on_input``), as Llama 4 does (transformers'
``Llama4TextMoe``, Megatron-Core's ``moe_apply_probs_on_input``): the expert MLP is not linear,
so the two differ. There is no auxiliary
load-balancing loss: the benchmark measures speed, and the loss curve of a few hundred steps
is not the point.

Expert parallelism replaces :attr:`MoE.experts` from outside
(:mod:`llmb.engine.parallel.expert`); the model itself only ever calls
``experts(tokens_sorted_by_expert, tokens_per_expert)``.
"""

from __future__ import annotations

import torch
from torch import nn

from llmb.engine.models.layers import GATED, FeedForward, activation_fn


def route(router_logits: torch.Tensor, top_k: int, score: str = "sigmoid",
          normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k routing. Returns (gate weights [tokens, k] in the logits' dtype, expert ids
    [tokens, k]); ties resolve to the lower expert id (``torch.topk``).

    ``score`` ``sigmoid``: the sigmoid of each chosen logit; ``softmax``: the chosen experts'
    softmax probabilities over all experts (fp32), renormalised to sum to 1 with ``normalize``.
    The softmax is monotonic, so the top-k of the probabilities is the top-k of the logits."""
    if score == "sigmoid":
        top_logits, experts = torch.topk(router_logits, top_k, dim=-1)
        return torch.sigmoid(top_logits), experts
    if score != "softmax":
        raise ValueError(f"unknown router score {score!r}")
    probs = torch.softmax(router_logits.float(), dim=-1)
    top, experts = torch.topk(probs, top_k, dim=-1)
    if normalize:
        top = top / top.sum(dim=-1, keepdim=True)
    return top.to(router_logits.dtype), experts


class GroupedExperts(nn.Module):
    """``num_experts`` MLPs stored as stacked weights ``[experts, in, out]``.

    :meth:`forward` takes tokens already sorted by expert and the number of tokens of each
    expert, and returns the outputs in the same order.
    """

    def __init__(self, num_experts: int, dim: int, hidden: int, activation: str):
        super().__init__()
        self.num_experts = num_experts
        self.activation = activation
        self.gated = activation in GATED
        self.w1 = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.w3 = nn.Parameter(torch.empty(num_experts, dim, hidden)) if self.gated else None
        self._act = activation_fn(activation)

    def forward(self, x: torch.Tensor, tokens_per_expert: list[int]) -> torch.Tensor:
        return expert_mlp(x, tokens_per_expert, self.w1, self.w2, self.w3, self._act)


def expert_mlp(x, tokens_per_expert, w1, w2, w3, act) -> torch.Tensor:
    """Run expert ``e`` on its slice of ``x`` (sorted by expert) for every ``e``.

    A loop of GEMMs: on CPU a grouped GEMM would not be faster, and the loop is exact.
    """
    # Expert weights FSDP leaves alone (expert parallelism) stay fp32 under a bf16 policy:
    # cast at use (a no-op when the dtypes already match).
    outs = []
    for e, xe in enumerate(torch.split(x, tokens_per_expert, dim=0)):
        h = act(xe @ w1[e].to(xe.dtype))
        if w3 is not None:
            h = h * (xe @ w3[e].to(xe.dtype))
        outs.append(h @ w2[e].to(xe.dtype))
    return torch.cat(outs) if outs else x.new_zeros(x.shape)


class MoE(nn.Module):
    """Router + routed experts + shared experts, on ``[batch, seq, dim]`` inputs."""

    def __init__(
        self,
        dim: int,
        num_experts: int,
        top_k: int,
        expert_hidden: int,
        activation: str,
        shared_experts: int = 0,
        shared_hidden: int = 0,
        apply_probs_on_input: bool = False,
        router_score: str = "sigmoid",
        normalize_top_k: bool = False,
    ):
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.apply_probs_on_input = apply_probs_on_input
        self.router_score = router_score
        self.normalize_top_k = normalize_top_k
        self.router = nn.Linear(dim, num_experts, bias=False)
        self.experts = GroupedExperts(num_experts, dim, expert_hidden, activation)
        # Several shared experts of one width act like one MLP of the summed width.
        self.shared = (
            FeedForward(dim, shared_experts * shared_hidden, activation) if shared_experts else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        gates, experts = route(self.router(tokens), self.top_k, self.router_score, self.normalize_top_k)
        flat_experts = experts.reshape(-1)
        # Stable sort keeps each expert's tokens in token order: reproducible sums.
        order = torch.argsort(flat_experts, stable=True)
        token_of = order // self.top_k
        counts = torch.bincount(flat_experts, minlength=self.num_experts).tolist()
        gate = gates.reshape(-1)[order].unsqueeze(-1)
        if self.apply_probs_on_input:
            routed = self.experts(tokens[token_of] * gate.to(tokens.dtype), counts)
        else:
            routed = self.experts(tokens[token_of], counts) * gate.to(tokens.dtype)
        out = torch.zeros_like(tokens).index_add_(0, token_of, routed.to(tokens.dtype))
        if self.shared is not None:
            out = out + self.shared(tokens)
        return out.view(shape)
