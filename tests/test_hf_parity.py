"""Each family's engine model against its transformers implementation (the peer).

transformers 5.23.0 (pinned in requirements.txt), fp32, tiny shapes, the same weights copied
across with the one mapping the engine uses (``llmb.engine.hf``), the same tokens:

================  =========================================================================
family            transformers class (file in transformers 5.23.0)
================  =========================================================================
Llama 3.1         ``LlamaForCausalLM`` (models/llama/modeling_llama.py), ``rope_type``
                  llama3 (modeling_rope_utils.py, ``_compute_llama3_parameters``)
Llama 2           ``LlamaForCausalLM``, default RoPE, theta 10000
Llama 4 (text)    ``Llama4ForCausalLM`` (models/llama4/modeling_llama4.py): ``Llama4TextMoe``
                  (router score on the expert input, shared expert), NoPE layers from
                  ``no_rope_layer_interval``, dense/MoE interleave from
                  ``interleave_moe_layer_step``, interleaved (complex) RoPE
Nemotron-4        ``NemotronForCausalLM`` (models/nemotron/modeling_nemotron.py):
                  ``NemotronLayerNorm1P``, ``partial_rotary_factor`` 0.5, relu2
================  =========================================================================

The transformers configs are written here from the published conventions (transformers'
own defaults where they are the published model's, e.g. Llama 4's NoPE interval), not from
llmb's exporter, and the llmb model comes from the catalog's spec of the workload, shrunk: so
what is checked is the catalog + engine against transformers. Logits and loss must agree to
1e-5 relative (max abs difference over max abs value), every gradient to 1e-4. A negative
control per family turns the variant off in llmb's spec and shows the comparison then fails:
the tolerance is tight enough to see each variant.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from _engine_models import llmb_model, rel  # noqa: E402

from llmb.catalog import default_catalog  # noqa: E402
from llmb.catalog.hf_config import architecture_differences, spec_from_hf  # noqa: E402
from llmb.plan.proxy import ProxySpec, shrink_model  # noqa: E402

LOGITS_TOL, LOSS_TOL, GRAD_TOL = 1e-5, 1e-5, 1e-4
SEQ, BATCH = 32, 2
TINY = ProxySpec(layers=4, hidden=64, heads=4, query_groups=2, vocab=128, seq_len=SEQ, num_experts=4, ffn_multiple=16)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def _spec(workload: str, size: str, **update):
    cat = default_catalog()
    spec = shrink_model(cat.size(cat.workload(workload), size)[1].model, TINY)
    return spec.model_copy(update=update) if update else spec


def _hf_config(spec, workload: str):
    """The transformers config of the published model at ``spec``'s shapes."""
    common = dict(vocab_size=spec.vocab, hidden_size=spec.hidden, num_hidden_layers=spec.layers,
                  num_attention_heads=spec.heads, num_key_value_heads=spec.query_groups, head_dim=spec.kv_channels,
                  max_position_embeddings=SEQ + 1, tie_word_embeddings=False)
    if workload == "llama3.1":  # Meta's Llama 3.1 config.json: rope_type llama3, rms_norm_eps 1e-5
        return transformers.LlamaConfig(**common, intermediate_size=spec.ffn_hidden, rms_norm_eps=1e-5,
                                        rope_parameters=dict(LLAMA3_ROPE))
    if workload == "llama2-maxtext":  # Llama 2: default RoPE, theta 10000, rms_norm_eps 1e-5 (70B)
        return transformers.LlamaConfig(**common, intermediate_size=spec.ffn_hidden, rms_norm_eps=1e-5,
                                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    if workload == "nemotron4":  # transformers' defaults: partial_rotary_factor 0.5, relu2, LayerNorm1P
        return transformers.NemotronConfig(**common, intermediate_size=spec.ffn_hidden, norm_eps=1e-5,
                                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    if workload == "llama4-maverick":  # Maverick: interleave step 2, NoPE every 4th, no QK-norm
        m = spec.moe
        return transformers.Llama4TextConfig(
            **common, intermediate_size=m.expert_ffn_hidden, intermediate_size_mlp=spec.ffn_hidden,
            num_local_experts=m.num_experts, num_experts_per_tok=m.top_k, interleave_moe_layer_step=2,
            use_qk_norm=False, rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        )
    raise AssertionError(workload)


def _hf_model(config):
    cls = {"llama": transformers.LlamaForCausalLM, "nemotron": transformers.NemotronForCausalLM,
           "llama4_text": transformers.Llama4ForCausalLM}[config.model_type]
    config._attn_implementation = "eager"  # another attention path than llmb's SDPA
    torch.manual_seed(0)
    return cls(config).float()


def _compare(spec, hf, seed: int = 0) -> dict[str, float]:
    """Max relative differences of logits, loss and gradients (llmb vs transformers)."""
    from llmb.engine.hf import to_hf

    model = llmb_model(spec, seed)
    weights: dict[str, torch.Tensor] = {}
    for fqn, p in model.named_parameters():
        to_hf(spec, fqn, p.detach().clone(), weights)
    hf.load_state_dict(weights, strict=True)
    window = torch.randint(0, spec.vocab, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(seed + 2))
    logits = model(window[:, :SEQ])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten())
    loss.backward()
    out = hf(input_ids=window, labels=window)  # transformers shifts the labels itself
    out.loss.backward()
    grads: dict[str, torch.Tensor] = {}
    for fqn, p in model.named_parameters():
        to_hf(spec, fqn, p.grad, grads)
    hf_grads = dict(hf.named_parameters())
    return {
        "logits": rel(logits.detach(), out.logits[:, :SEQ].detach()),
        "loss": abs(float(loss.detach()) - float(out.loss.detach())) / abs(float(out.loss.detach())),
        "grad": max(rel(g, hf_grads[name].grad) for name, g in grads.items()),
    }


FAMILIES = [
    # workload, size, the variant a negative control turns off
    ("llama3.1", "8b", {"rope_scaling": None}),
    ("llama2-maxtext", "70b", {"rope_theta": 500000.0}),
    ("nemotron4", "340b", {"rotary_percent": 1.0}),
    ("llama4-maverick", "400b", {"nope_layer_interval": None}),
]


@pytest.mark.parametrize("workload,size,control", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_engine_equals_transformers(workload, size, control):
    spec = _spec(workload, size)
    config = _hf_config(spec, workload)
    # The catalog's variants are what the transformers config says (seq_len aside).
    read_back = spec_from_hf(config.to_dict(), seq_len=spec.seq_len)
    assert architecture_differences(spec, read_back) == []
    diff = _compare(spec, _hf_model(config))
    print(f"{workload}: {diff}")
    assert diff["logits"] <= LOGITS_TOL and diff["loss"] <= LOSS_TOL and diff["grad"] <= GRAD_TOL, diff
    # Negative control: without the variant the same comparison fails by far.
    off = _compare(spec.model_copy(update=control), _hf_model(config))
    print(f"{workload} without {sorted(control)}: {off}")
    assert off["logits"] > 100 * LOGITS_TOL, off


def test_llama4_router_score_on_the_output_is_far_from_transformers():
    """The issue's finding: Llama 4 gating the expert's output instead of its input."""
    spec = _spec("llama4-maverick", "400b")
    moe = spec.moe.model_copy(update={"apply_probs_on_input": False})
    off = _compare(spec.model_copy(update={"moe": moe}), _hf_model(_hf_config(spec, "llama4-maverick")))
    print(f"llama4 output gating: {off}")
    assert off["logits"] > 1e-3, off


def test_nemotron_plain_gamma_is_far_from_transformers():
    """A zero-centred gamma read as a plain one (weights copied as stored) is another model."""
    spec = _spec("nemotron4", "340b")
    off = _compare(spec.model_copy(update={"layernorm_zero_centered_gamma": False}),
                   _hf_model(_hf_config(spec, "nemotron4")))
    print(f"nemotron plain gamma: {off}")
    assert off["logits"] > 1e-2, off
