"""The building blocks every model family shares: norms, MLP activations and the dense MLP.

==============  =========================================================================
``RMSNorm``     Llama, Llama 4 (``F.rms_norm``)
``LayerNorm``   Nemotron-4 (``F.layer_norm``, with a bias)
activations     ``swiglu`` (gated: ``silu(w1 x) * w3 x``), ``squared_relu``, ``gelu``
``FeedForward`` the dense MLP, also the shared expert of an MoE layer
==============  =========================================================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class LayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


def make_norm(kind: str, dim: int) -> nn.Module:
    return RMSNorm(dim) if kind == "rmsnorm" else LayerNorm(dim)


def activation_fn(name: str):
    if name == "swiglu":
        return F.silu
    if name == "squared_relu":
        return lambda x: torch.square(F.relu(x))
    if name == "gelu":
        return F.gelu
    raise ValueError(f"unknown activation {name!r}")


class FeedForward(nn.Module):
    """Dense MLP: gated (SwiGLU: ``w2(silu(w1 x) * w3 x)``) or not (``w2(act(w1 x))``)."""

    def __init__(self, dim: int, hidden: int, activation: str):
        super().__init__()
        self.gated = activation == "swiglu"
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False) if self.gated else None
        self._act = activation_fn(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._act(self.w1(x))
        if self.gated:
            h = h * self.w3(x)
        return self.w2(h)
