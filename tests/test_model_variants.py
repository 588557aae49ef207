"""The architecture variants a model spec names, one by one (single process).

Each family's whole model is checked against transformers in ``test_hf_parity.py``; here the
pieces: which layers are NoPE, what Llama 3.1's scaling does to each frequency band, the
partial rotation, the zero-centred gamma, which side of the expert the router's score scales,
and what the catalog says each workload uses.
"""

from __future__ import annotations

import math

import pytest
import torch

from llmb.catalog import default_catalog
from llmb.catalog.schema import ModelSpec, RopeScaling
from llmb.errors import LlmbError

LLAMA31_SCALING = RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context=8192)


def _model(workload: str, size: str) -> ModelSpec:
    cat = default_catalog()
    return cat.size(cat.workload(workload), size)[1].model


def test_the_catalog_names_each_published_variant():
    l31 = _model("llama3.1", "8b")
    assert l31.rope_scaling == LLAMA31_SCALING and l31.nope_layer_interval is None
    for size in ("8b", "70b"):  # Llama 3 has no RoPE scaling; the 405B model is Llama 3.1's
        assert _model("megatron-llama3", size).rope_scaling is None
    assert _model("megatron-llama3", "405b").rope_scaling == LLAMA31_SCALING
    l2 = _model("llama2-maxtext", "70b")
    assert (l2.rope_scaling, l2.rope_theta, l2.rotary_percent, l2.nope_layer_interval) == (None, 10000.0, 1.0, None)
    mav = _model("llama4-maverick", "400b")
    assert mav.moe.apply_probs_on_input and mav.rope_scaling is None
    assert [i for i in range(mav.layers) if not mav.uses_rope(i)] == list(range(3, 48, 4))
    assert [i for i in range(mav.layers) if mav.is_moe_layer(i)] == list(range(1, 48, 2))
    nem = _model("nemotron4", "340b")
    assert nem.rotary_percent == 0.5 and nem.rotary_dim == 96 and nem.layernorm_zero_centered_gamma
    assert (nem.activation, nem.norm) == ("squared_relu", "layernorm")


def test_variants_survive_the_proxy_shrink():
    from llmb.plan.proxy import proxy_spec, shrink_model

    for name in ("cpu-tiny", "cpu-small"):
        p = proxy_spec(name)
        assert shrink_model(_model("llama3.1", "8b"), p).rope_scaling == LLAMA31_SCALING
        mav = shrink_model(_model("llama4-maverick", "400b"), p)
        assert mav.nope_layer_interval == 4 and mav.moe.apply_probs_on_input and not mav.uses_rope(3)
        nem = shrink_model(_model("nemotron4", "340b"), p)
        assert nem.rotary_dim * 2 == nem.kv_channels and nem.layernorm_zero_centered_gamma


def test_bad_variants_are_refused():
    base = _model("llama3.1", "8b").model_dump()
    with pytest.raises(ValueError, match="even number of rotated channels"):
        ModelSpec.model_validate({**base, "rotary_percent": 0.3})
    with pytest.raises(ValueError, match="must exceed low_freq_factor"):
        RopeScaling(factor=8.0, low_freq_factor=4.0, high_freq_factor=1.0, original_context=8192)
    from llmb.plan.proxy import ProxySpec, shrink_model

    odd = ProxySpec(layers=2, hidden=36, heads=6, query_groups=2, vocab=64, seq_len=8, num_experts=2)
    with pytest.raises(LlmbError, match="cannot shrink"):  # head_dim 6 x 0.5 = 3 channels
        shrink_model(_model("nemotron4", "340b"), odd)


def test_llama3_scaling_keeps_short_stretches_long_and_blends_between():
    from llmb.engine.models.transformer import RotaryEmbedding

    plain = RotaryEmbedding(128, 16, 500000.0).inv_freq()
    scaled = RotaryEmbedding(128, 16, 500000.0, LLAMA31_SCALING).inv_freq()
    wavelength = 2 * math.pi / plain
    short, long = wavelength < 8192 / 4, wavelength > 8192 / 1
    mid = ~short & ~long
    assert torch.equal(scaled[short], plain[short])
    torch.testing.assert_close(scaled[long], plain[long] / 8, rtol=1e-15, atol=0)
    assert bool(((scaled[mid] < plain[mid]) & (scaled[mid] > plain[mid] / 8)).all())
    # The count at full size: 35 of the 64 frequencies change.
    assert int((scaled != plain).sum()) == 35 and int(mid.sum()) > 0


def test_partial_rope_rotates_the_first_channels_only():
    from llmb.engine.models.transformer import RotaryEmbedding, apply_rotary

    rope = RotaryEmbedding(8, 5, 10000.0)
    rope.init_buffers()
    x = torch.randn(2, 3, 5, 16)
    y = apply_rotary(x, *rope())
    assert torch.equal(y[..., 8:], x[..., 8:])
    full = RotaryEmbedding(8, 5, 10000.0)
    full.init_buffers()
    torch.testing.assert_close(y[..., :8], apply_rotary(x[..., :8], *full()))
    assert not torch.allclose(y[..., :8], x[..., :8])  # position > 0 rotates


def test_nope_layers_ignore_positions():
    from llmb.engine.models.transformer import Attention

    torch.manual_seed(0)
    for use_rope in (True, False):
        att = Attention(16, 2, 1, 8, use_rope=use_rope)
        x = torch.randn(1, 4, 16)
        angles = torch.randn(4, 8)
        a = att(x, angles.cos(), angles.sin())
        b = att(x, torch.ones(4, 8), torch.zeros(4, 8))  # the identity rotation
        assert torch.equal(a, b) == (not use_rope)


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
def test_zero_centred_gamma_stores_weight_minus_one(norm):
    from llmb.engine.models.layers import make_norm

    spec = _model("nemotron4", "340b").model_copy(update={"norm": norm, "hidden": 8})
    plain = make_norm(spec.model_copy(update={"layernorm_zero_centered_gamma": False}), 8)
    centred = make_norm(spec, 8)
    assert (plain.weight_init, centred.weight_init) == (1.0, 0.0)
    gamma = torch.randn(8)
    with torch.no_grad():
        plain.weight.copy_(gamma)
        centred.weight.copy_(gamma - 1)
        if norm == "layernorm":
            plain.bias.fill_(0.1)
            centred.bias.fill_(0.1)
    x = torch.randn(3, 8)
    torch.testing.assert_close(centred(x), plain(x), rtol=1e-6, atol=1e-6)


def test_zero_centred_model_starts_with_zero_norm_weights():
    from llmb.engine.models.transformer import build_model
    from llmb.plan.proxy import proxy_spec, shrink_model

    model = build_model(shrink_model(_model("nemotron4", "340b"), proxy_spec("cpu-tiny")))
    model.to_empty(device="cpu")
    model.init_weights(seed=0)
    norms = [p for n, p in model.named_parameters() if "norm" in n]
    assert norms and all(float(p.detach().abs().max()) == 0.0 for p in norms)


@pytest.mark.parametrize("on_input", [False, True])
def test_router_score_scales_the_side_the_spec_names(on_input):
    from llmb.engine.models.moe import MoE, route

    torch.manual_seed(0)
    moe = MoE(dim=16, num_experts=4, top_k=2, expert_hidden=24, activation="swiglu",
              shared_experts=1, shared_hidden=8, apply_probs_on_input=on_input)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    tokens = torch.randn(7, 16)
    gates, experts = route(moe.router(tokens), 2)
    want = moe.shared(tokens)
    w1, w2, w3 = moe.experts.w1, moe.experts.w2, moe.experts.w3
    for t in range(7):
        for k in range(2):
            e, g = int(experts[t, k]), gates[t, k]
            x = tokens[t] * g if on_input else tokens[t]
            y = (torch.nn.functional.silu(x @ w1[e]) * (x @ w3[e])) @ w2[e]
            want[t] += y if on_input else g * y
    torch.testing.assert_close(moe(tokens.view(1, 7, 16)).view(7, 16), want, rtol=1e-5, atol=1e-6)
