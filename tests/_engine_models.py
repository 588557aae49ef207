"""Helpers the peer-parity tests share (not a test module)."""

from __future__ import annotations

import torch


def llmb_model(spec, seed: int = 0):
    """The engine's model on CPU with weights large enough that every part moves the logits:
    matrices ~ N(0, 1/fan_in), norm weights near their initial value (1, or 0 for a
    zero-centred gamma), norm biases near 0."""
    from llmb.engine.models.layers import Norm
    from llmb.engine.models.transformer import build_model

    model = build_model(spec, "cpu")
    model.init_weights(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            for leaf, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=gen)
                if isinstance(module, Norm):
                    p.copy_(0.1 * noise + (module.weight_init if leaf == "weight" else 0.0))
                elif p.dim() >= 2:
                    fan_in = p.shape[-2] if p.dim() == 3 else p.shape[-1]
                    p.copy_(noise / fan_in**0.5)
    return model


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest magnitude of ``b``."""
    return float((a - b).abs().max() / b.abs().max())
