"""The building blocks every model family shares: norms, MLP activations and the dense MLP.

==============  =========================================================================
``RMSNorm``     Llama, Llama 4 (``F.rms_norm``)
``LayerNorm``   Nemotron-4 (``F.layer_norm``, with a bias; zero-centred gamma, "layernorm1p")
activations     ``swiglu`` (gated: ``silu(w1 x) * w3 x``), ``geglu`` (gated, tanh GELU: Grok-1),
                ``squared_relu``, ``gelu``
``FeedForward`` the dense MLP, also the shared expert of an MoE layer
==============  =========================================================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Norm(nn.Module):
    """A norm's gamma, stored as is or zero-centred (``zero_centered``: the parameter holds
    gamma - 1 and starts at 0, Megatron's ``apply_layernorm_1p``; the math is the same, the
    stored number is not, which is what a checkpoint of Nemotron-4 holds)."""

    def __init__(self, dim: int, eps: float, zero_centered: bool):
        super().__init__()
        self.eps = eps
        self.zero_centered = zero_centered
        self.weight = nn.Parameter(torch.empty(dim))

    @property
    def weight_init(self) -> float:
        """The stored weight's initial value (gamma starts at 1)."""
        return 0.0 if self.zero_centered else 1.0

    def gamma(self) -> torch.Tensor:
        return self.weight + 1.0 if self.zero_centered else self.weight


class RMSNorm(Norm):
    def __init__(self, dim: int, eps: float = 1e-5, zero_centered: bool = False):
        super().__init__(dim, eps, zero_centered)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.gamma(), self.eps)


class LayerNorm(Norm):
    def __init__(self, dim: int, eps: float = 1e-5, zero_centered: bool = False):
        super().__init__(dim, eps, zero_centered)
        self.bias = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.gamma(), self.bias, self.eps)


def make_norm(spec, dim: int) -> nn.Module:
    """The norm of ``spec`` (a :class:`~llmb.catalog.schema.ModelSpec`) over ``dim`` channels."""
    cls = RMSNorm if spec.norm == "rmsnorm" else LayerNorm
    return cls(dim, spec.norm_eps, spec.layernorm_zero_centered_gamma)


#: activations whose MLP is gated (``act(w1 x) * w3 x``)
GATED = ("swiglu", "geglu")


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def activation_fn(name: str):
    if name == "swiglu":
        return F.silu
    if name == "geglu":
        # Grok-1's experts: jax.nn.gelu, whose default is the tanh approximation
        return _gelu_tanh
    if name == "squared_relu":
        return lambda x: torch.square(F.relu(x))
    if name == "gelu":
        return F.gelu
    raise ValueError(f"unknown activation {name!r}")


class FeedForward(nn.Module):
    """Dense MLP: gated (SwiGLU: ``w2(silu(w1 x) * w3 x)``, GeGLU) or not (``w2(act(w1 x))``)."""

    def __init__(self, dim: int, hidden: int, activation: str):
        super().__init__()
        self.gated = activation in GATED
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False) if self.gated else None
        self._act = activation_fn(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._act(self.w1(x))
        if self.gated:
            h = h * self.w3(x)
        return self.w2(h)
