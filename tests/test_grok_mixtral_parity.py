"""Grok-1's MoE block and model against the peer: transformers' Mixtral (fp32, tiny shapes).

transformers 5.23.0 (pinned in requirements.txt), ``MixtralSparseMoeBlock`` and
``MixtralForCausalLM`` in ``transformers/models/mixtral/modeling_mixtral.py``: a linear router,
softmax over the experts' logits in fp32, top-k, the k weights renormalised to sum to 1
(``MixtralTopKRouter``), experts as stacked ``gate_up_proj`` / ``down_proj`` with
``act(gate) * up``; attention with rotate-half RoPE; RMSNorm. Grok-1's experts are GeGLU with
the tanh GELU, which Mixtral runs with ``hidden_act="gelu_pytorch_tanh"``.

Mixtral has no soft-capped scores, embedding or logit multipliers and no norms on the block
outputs: the model-level comparison switches those four Grok-1 variants off in llmb's spec
(each is checked on its own in ``test_grok_variants.py``), and keeps what the two share - the
routing, the GeGLU experts, every layer MoE, GQA and RoPE. Weights are copied with this file's
own mapping (written from Mixtral's parameter shapes, not from llmb's exporter).
Tolerances as the other families' parity tests: logits and loss 1e-5 relative (max abs
difference over max abs value), every gradient 1e-4. Negative controls turn the routing's
renormalisation, the softmax score and the GELU off and show the comparison then fails.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from _engine_models import llmb_model, rel  # noqa: E402

from llmb.catalog import default_catalog  # noqa: E402
from llmb.plan.proxy import ProxySpec, shrink_model  # noqa: E402

LOGITS_TOL, LOSS_TOL, GRAD_TOL = 1e-5, 1e-5, 1e-4
SEQ, BATCH = 32, 2
TINY = ProxySpec(layers=3, hidden=64, heads=4, query_groups=2, vocab=128, seq_len=SEQ, num_experts=8, ffn_multiple=16)
NOT_IN_MIXTRAL = {"attn_logit_softcap": None, "embedding_multiplier": None, "output_multiplier": None,
                  "sandwich_norm": False}


def _spec(**update):
    cat = default_catalog()
    spec = shrink_model(cat.size(cat.workload("grok1"), "314b")[1].model, TINY)
    return spec.model_copy(update={**NOT_IN_MIXTRAL, **update})


def _moe_update(spec, **update):
    return spec.model_copy(update={"moe": spec.moe.model_copy(update=update)})


def _config(spec):
    m = spec.moe
    return transformers.MixtralConfig(
        vocab_size=spec.vocab, hidden_size=spec.hidden, intermediate_size=m.expert_ffn_hidden,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.query_groups,
        head_dim=spec.kv_channels, hidden_act="gelu_pytorch_tanh", max_position_embeddings=SEQ + 1,
        rms_norm_eps=spec.norm_eps, num_local_experts=m.num_experts, num_experts_per_tok=m.top_k,
        router_jitter_noise=0.0, tie_word_embeddings=False, sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
    )


def _hf(spec):
    config = _config(spec)
    config._attn_implementation = "eager"  # another attention path than llmb's
    torch.manual_seed(0)
    return transformers.MixtralForCausalLM(config).float()


_LAYER = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj", "attention.wv": "self_attn.v_proj",
          "attention.wo": "self_attn.o_proj", "attention_norm": "input_layernorm",
          "ffn_norm": "post_attention_layernorm", "feed_forward.router": "mlp.gate"}


def _to_mixtral(fqn: str, value: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
    """One llmb parameter (or gradient) into Mixtral's names and shapes."""
    top = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
    if fqn in top:
        out[top[fqn]] = value
        return
    _, i, rest = fqn.split(".", 2)
    part, leaf = rest.rsplit(".", 1)
    prefix = f"model.layers.{i}."
    if part == "feed_forward.experts":
        # llmb: x @ w1[e] / x @ w3[e] ([E, dim, hidden]), h @ w2[e] ([E, hidden, dim]);
        # Mixtral: linear(x, gate_up[e]) with gate_up [E, 2*hidden, dim] = [w1^T; w3^T], down [E, dim, hidden]
        if leaf == "w2":
            out[prefix + "mlp.experts.down_proj"] = value.transpose(1, 2)
        else:
            half = value.transpose(1, 2)
            key = prefix + "mlp.experts.gate_up_proj"
            pieces = out.setdefault("_pieces", {}).setdefault(key, {})
            pieces[leaf] = half
            if {"w1", "w3"} <= set(pieces):
                out[key] = torch.cat([pieces["w1"], pieces["w3"]], dim=1)
        return
    out[prefix + _LAYER[part] + "." + leaf] = value


def _mapped(named) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for fqn, value in named:
        _to_mixtral(fqn, value, out)
    out.pop("_pieces", None)
    return out


def test_moe_block_equals_mixtral_sparse_moe_block():
    """The block alone: same tokens in, same output and input gradient out."""
    from llmb.engine.models.moe import MoE

    spec = _spec()
    m = spec.moe
    torch.manual_seed(0)
    ours = MoE(spec.hidden, m.num_experts, m.top_k, m.expert_ffn_hidden, spec.activation,
               router_score=m.router_score, normalize_top_k=m.normalize_top_k)
    for p in ours.parameters():
        torch.nn.init.normal_(p, std=0.2)
    theirs = transformers.models.mixtral.modeling_mixtral.MixtralSparseMoeBlock(_config(spec)).float()
    weights = _mapped((f"layers.0.feed_forward.{n}", p.detach()) for n, p in ours.named_parameters())
    theirs.load_state_dict({k.removeprefix("model.layers.0.mlp."): v for k, v in weights.items()}, strict=True)
    x = torch.randn(BATCH, SEQ, spec.hidden, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    a, b = ours(x), theirs(x2)
    a.square().sum().backward()
    b.square().sum().backward()
    diff = {"out": rel(a.detach(), b.detach()), "grad": rel(x.grad, x2.grad)}
    print(f"grok MoE block vs MixtralSparseMoeBlock: {diff}")
    assert diff["out"] <= LOGITS_TOL and diff["grad"] <= GRAD_TOL, diff


def _compare(spec, hf) -> dict[str, float]:
    model = llmb_model(spec)
    hf.load_state_dict(_mapped((n, p.detach().clone()) for n, p in model.named_parameters()), strict=True)
    window = torch.randint(0, spec.vocab, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(2))
    logits = model(window[:, :SEQ])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten())
    loss.backward()
    out = hf(input_ids=window, labels=window)
    out.loss.backward()
    grads = _mapped((n, p.grad) for n, p in model.named_parameters())
    hf_grads = dict(hf.named_parameters())
    return {
        "logits": rel(logits.detach(), out.logits[:, :SEQ].detach()),
        "loss": abs(float(loss.detach()) - float(out.loss.detach())) / abs(float(out.loss.detach())),
        "grad": max(rel(g, hf_grads[name].grad) for name, g in grads.items()),
    }


def test_grok_model_equals_mixtral():
    spec = _spec()
    assert spec.moe_layers == spec.layers and spec.moe.num_experts == 8 and spec.moe.top_k == 2
    diff = _compare(spec, _hf(spec))
    print(f"grok (Mixtral-shared variants) vs MixtralForCausalLM: {diff}")
    assert diff["logits"] <= LOGITS_TOL and diff["loss"] <= LOSS_TOL and diff["grad"] <= GRAD_TOL, diff


@pytest.mark.parametrize("name,off", [
    ("no renormalisation", lambda s: _moe_update(s, normalize_top_k=False)),
    ("sigmoid score", lambda s: _moe_update(s, normalize_top_k=False, router_score="sigmoid")),
    ("swiglu experts", lambda s: s.model_copy(update={"activation": "swiglu"})),
])
def test_negative_controls_fail_the_comparison(name, off):
    spec = _spec()
    diff = _compare(off(spec), _hf(spec))
    print(f"grok with {name} vs Mixtral: {diff}")
    assert diff["logits"] > 100 * LOGITS_TOL, (name, diff)
