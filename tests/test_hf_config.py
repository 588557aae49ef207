"""transformers config.json <-> ModelSpec (pure Python; the numerics are test_hf_parity.py's)."""

from __future__ import annotations

import json

import pytest

from llmb.catalog import default_catalog
from llmb.catalog.hf_config import (
    architecture_differences,
    hf_config_from_spec,
    read_hf_config,
    spec_from_hf,
)
from llmb.errors import LlmbError


def _all_specs():
    cat = default_catalog()
    out = []
    for wl in ("llama3.1", "llama2-maxtext", "llama4-maverick", "nemotron4", "megatron-llama3"):
        w = cat.workload(wl)
        for size, s in w.sizes.items():
            out.append((f"{wl}-{size}", s.model))
    return out


@pytest.mark.parametrize("name,spec", _all_specs(), ids=[n for n, _ in _all_specs()])
def test_every_catalog_model_round_trips_through_a_transformers_config(name, spec):
    cfg = json.loads(json.dumps(hf_config_from_spec(spec)))
    back = spec_from_hf(cfg)
    assert back.seq_len == spec.seq_len
    assert architecture_differences(spec, back) == []


def test_differences_are_named_field_by_field():
    cat = default_catalog()
    a = cat.size(cat.workload("llama3.1"), "8b")[1].model
    b = a.model_copy(update={"hidden": 1024, "rope_scaling": None, "seq_len": 16})
    diffs = architecture_differences(a, b)
    assert any(d.startswith("hidden: 4096 vs 1024") for d in diffs)
    assert any(d.startswith("rope_scaling:") for d in diffs) and not any("seq_len" in d for d in diffs)


def test_legacy_rope_keys_are_read():
    cfg = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
           "intermediate_size": 96, "vocab_size": 128, "max_position_embeddings": 256, "rope_theta": 500000.0,
           "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 8192}}
    spec = spec_from_hf(cfg, seq_len=32)
    assert spec.rope_theta == 500000.0 and spec.rope_scaling.factor == 8.0 and spec.seq_len == 32
    assert spec.norm_eps == 1e-6  # transformers' LlamaConfig default when the file has none


BASE = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
        "intermediate_size": 96, "vocab_size": 128, "max_position_embeddings": 64}
L4 = {**BASE, "model_type": "llama4_text", "intermediate_size": 32, "intermediate_size_mlp": 96,
      "num_hidden_layers": 4, "num_local_experts": 4, "num_experts_per_tok": 1, "interleave_moe_layer_step": 2,
      "use_qk_norm": False}


@pytest.mark.parametrize("cfg,needle", [
    ({**BASE, "model_type": "gpt2"}, "model_type 'gpt2' is not one llmb builds"),
    ({**BASE, "model_type": "llama4"}, "multimodal Llama 4"),
    ({**BASE, "attention_bias": True}, "a bias in the linear layers"),
    ({**BASE, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "RoPE type 'yarn'"),
    ({**BASE, "hidden_act": "gelu"}, "SwiGLU"),
    ({**L4, "use_qk_norm": True}, "QK-norm"),
    ({**L4, "max_position_embeddings": 8192}, "temperature tuning"),
    ({**L4, "attn_temperature_tuning": False, "max_position_embeddings": 8193}, "chunked attention"),
    ({**L4, "no_rope_layers": [1, 0, 1, 1]}, "not every n-th layer"),
    ({k: v for k, v in BASE.items() if k != "vocab_size"}, "no vocab_size"),
])
def test_configs_the_engine_does_not_compute_are_refused_in_one_line(cfg, needle):
    with pytest.raises(LlmbError) as err:
        spec_from_hf(cfg, name="x/config.json")
    assert needle in str(err.value) and str(err.value).startswith("x/config.json: ") and "\n" not in str(err.value)


def test_llama4_pattern_is_read_from_transformers_defaults():
    spec = spec_from_hf(L4)
    assert spec.nope_layer_interval == 4 and not spec.uses_rope(3) and spec.uses_rope(2)
    assert (spec.moe.first_layer, spec.moe.layer_step, spec.moe.apply_probs_on_input) == (1, 2, True)
    assert spec.moe.shared_experts == 1 and spec.moe.shared_expert_ffn_hidden == 32 and spec.ffn_hidden == 96


def test_exporting_what_transformers_cannot_express_is_refused():
    cat = default_catalog()
    spec = cat.size(cat.workload("llama3.1"), "8b")[1].model
    with pytest.raises(LlmbError, match="rotates every channel"):
        hf_config_from_spec(spec.model_copy(update={"rotary_percent": 0.5}))
    with pytest.raises(LlmbError, match="no NoPE layers"):
        hf_config_from_spec(spec.model_copy(update={"nope_layer_interval": 4}))


def test_reading_a_folder(tmp_path):
    with pytest.raises(LlmbError, match="no such folder"):
        read_hf_config(tmp_path / "missing")
    with pytest.raises(LlmbError, match="no config.json"):
        read_hf_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(LlmbError, match="cannot read it as JSON"):
        read_hf_config(tmp_path)
