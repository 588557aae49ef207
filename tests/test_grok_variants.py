"""Grok-1's architecture variants, one by one (single process, fp32).

What xai-org/grok-1's ``model.py`` does and the catalog's ``grok1`` spec names: soft-capped
attention scores (``30 tanh(s / 30)``), input embeddings times 78.38 and logits times 0.577,
an RMSNorm on each block's output as well as its input (four per layer), GeGLU experts with
the tanh GELU, and softmax top-2 routing over 8 experts (renormalised, Mixtral-style, as
Megatron-Core routes by default). Each test states the variant's math and fails when the
variant is switched off in the spec. The whole MoE model against transformers' Mixtral is in
``test_hf_parity.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmb.catalog import default_catalog
from llmb.catalog.schema import ModelSpec
from llmb.plan.proxy import ProxySpec, shrink_model

TINY = ProxySpec(layers=2, hidden=32, heads=4, query_groups=2, vocab=64, seq_len=16, num_experts=4, ffn_multiple=16)


def _grok() -> ModelSpec:
    cat = default_catalog()
    return cat.size(cat.workload("grok1"), "314b")[1].model


def _tiny(**update) -> ModelSpec:
    spec = shrink_model(_grok(), TINY)
    return spec.model_copy(update=update) if update else spec


def _logits(spec: ModelSpec, seed: int = 0, qk_scale: float = 1.0) -> torch.Tensor:
    from llmb.engine.models.transformer import build_model

    model = build_model(spec, "cpu")
    model.init_weights(seed)
    with torch.no_grad():  # weights large enough that every part moves the logits
        gen = torch.Generator().manual_seed(seed + 1)
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-2 if p.dim() == 3 else -1] ** 0.5)
        for name, p in model.named_parameters():
            if name.endswith(("wq.weight", "wk.weight")):
                p.mul_(qk_scale)
    tokens = torch.randint(0, spec.vocab, (2, spec.seq_len), generator=torch.Generator().manual_seed(seed + 2))
    return model(tokens).detach()


def test_the_catalog_states_grok1_as_printed():
    g = _grok()
    assert (g.layers, g.hidden, g.ffn_hidden, g.heads, g.query_groups, g.vocab, g.seq_len) == (
        64, 6144, 32768, 48, 8, 128256, 8192)
    assert (g.moe.num_experts, g.moe.top_k, g.moe.expert_ffn_hidden, g.moe_layers) == (8, 2, 32768, 64)
    assert (g.moe.router_score, g.moe.normalize_top_k) == ("softmax", True)
    assert g.attn_logit_softcap == 30.0 and g.sandwich_norm and g.activation == "geglu"
    assert math.isclose(g.embedding_multiplier, math.sqrt(6144), rel_tol=1e-12)
    assert math.isclose(g.output_multiplier, 1 / math.sqrt(3), rel_tol=1e-12)
    # 1/sqrt(head_dim) is Grok-1's attn_output_multiplier (0.08838834764831845): no extra variant
    assert math.isclose(g.kv_channels**-0.5, 0.08838834764831845, rel_tol=1e-12)
    # survives the proxy shrink
    t = _tiny()
    assert (t.attn_logit_softcap, t.sandwich_norm, t.activation, t.moe.router_score, t.moe.normalize_top_k) == (
        30.0, True, "geglu", "softmax", True)


def test_bad_router_variant_is_refused():
    m = _grok().moe.model_dump()
    with pytest.raises(ValueError, match="normalize_top_k needs router_score: softmax"):
        type(_grok().moe).model_validate({**m, "router_score": "sigmoid"})


def test_softmax_routing_renormalises_the_top_two():
    from llmb.engine.models.moe import route

    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.0, 3.0, 2.5, 0.1]])
    gates, experts = route(logits, 2, "softmax", normalize=True)
    assert experts.tolist() == [[0, 1], [1, 2]]
    want = torch.softmax(logits[:, :2].new_tensor([[2.0, 1.0], [3.0, 2.5]]), dim=-1)  # softmax over the two
    torch.testing.assert_close(gates, want)
    # without renormalising: the shares of the softmax over all four
    raw, _ = route(logits, 2, "softmax", normalize=False)
    torch.testing.assert_close(raw, torch.softmax(logits, -1).gather(1, experts))
    assert not torch.allclose(raw, gates, atol=1e-3)
    sig, _ = route(logits, 2, "sigmoid")
    assert not torch.allclose(sig, gates, atol=1e-3)


def test_softcapped_attention_is_the_capped_formula():
    from llmb.engine.models.transformer import CausalAttention

    torch.manual_seed(0)
    q, k, v = 4 * torch.randn(1, 4, 8, 16), 4 * torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16)
    got = CausalAttention(softcap=5.0)(q, k, v)
    kk, vv = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    s = 5.0 * torch.tanh((q @ kk.transpose(-1, -2)) / 4.0 / 5.0)
    s = s.masked_fill(~torch.ones(8, 8, dtype=torch.bool).tril(), float("-inf"))
    torch.testing.assert_close(got, torch.softmax(s, -1) @ vv)
    # a cap far above the scores is plain causal SDPA; the cap the test uses is not
    torch.testing.assert_close(CausalAttention(softcap=1e9)(q, k, v), CausalAttention()(q, k, v), rtol=1e-5, atol=1e-5)
    assert (got - CausalAttention()(q, k, v)).abs().max() > 1e-2


def test_geglu_is_tanh_gelu_gated():
    from llmb.engine.models.layers import FeedForward

    torch.manual_seed(0)
    ff = FeedForward(8, 12, "geglu")
    x = torch.randn(3, 8)
    want = ff.w2(F.gelu(ff.w1(x), approximate="tanh") * ff.w3(x))
    torch.testing.assert_close(ff(x), want)
    swiglu = FeedForward(8, 12, "swiglu")
    swiglu.load_state_dict(ff.state_dict())
    assert (swiglu(x) - ff(x)).abs().max() > 1e-3


def test_output_multiplier_scales_the_logits_exactly():
    on = _logits(_tiny())
    off = _logits(_tiny(output_multiplier=None))
    torch.testing.assert_close(on, off * (1 / math.sqrt(3)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant,off", [
    ("embedding_multiplier", {"embedding_multiplier": None}),
    ("attn_logit_softcap", {"attn_logit_softcap": None}),
    ("sandwich_norm", {"sandwich_norm": False}),
    ("activation", {"activation": "swiglu"}),
])
def test_each_variant_moves_the_logits(variant, off):
    # scores reach the cap of 30 only with large queries and keys (trained Grok-1's do)
    scale = 4.0 if variant == "attn_logit_softcap" else 1.0
    on = _logits(_tiny(), qk_scale=scale)
    without = _logits(_tiny(**off), qk_scale=scale)
    rel = float((on - without).abs().max() / on.abs().max())
    print(f"{variant} off: max rel logit change {rel:.2e}")
    assert rel > 1e-3, (variant, rel)


def test_sandwich_norms_are_parameters_of_every_layer():
    from llmb.engine.models.transformer import build_model
    from llmb.plan.shapes import param_count

    spec = _tiny()
    names = {n for n, _ in build_model(spec, "meta").named_parameters()}
    for i in range(spec.layers):
        assert {f"layers.{i}.post_attention_norm.weight", f"layers.{i}.post_ffn_norm.weight"} <= names
    # the planner counts them: 4 norms per layer instead of 2
    plain = param_count(spec.model_copy(update={"sandwich_norm": False}))
    assert param_count(spec).norms - plain.norms == 2 * spec.layers * spec.hidden
    total = sum(p.numel() for p in build_model(spec, "meta").parameters())
    assert total == param_count(spec).total


def test_no_transformers_mapping_is_one_line():
    from llmb.engine.hf import hf_source
    from llmb.errors import LlmbError

    with pytest.raises(LlmbError, match="no transformers mapping for the grok family"):
        hf_source("tok_embeddings.weight", _grok())
