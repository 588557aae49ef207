"""Hugging Face transformers ``config.json`` <-> the catalog's :class:`ModelSpec`.

Three model types map to llmb's families (transformers 5.23 names):

==============  ==========  ===============================================================
model_type      family      what the config says beyond the shapes
==============  ==========  ===============================================================
``llama``       llama       ``rope_parameters`` (``rope_type`` default or llama3), RMSNorm eps
``llama4_text`` llama4      experts, ``moe_layers``, ``no_rope_layers``, the dense MLP width
                            ``intermediate_size_mlp``; the shared expert has the routed width
``nemotron``    nemotron    ``partial_rotary_factor``, LayerNorm1P (zero-centred gamma), relu2
==============  ==========  ===============================================================

A config describing something the engine does not compute (biases, QK-norm, another RoPE
type, Llama 4's chunked attention or attention temperature tuning where they would matter at
the sequence length used) is refused with one line rather than approximated. Pure Python
(json only): planning checks a ``--init-from hf:DIR`` before anything starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmb.catalog.schema import ModelSpec, MoESpec, RopeScaling
from llmb.errors import LlmbError

CONFIG_FILE = "config.json"
HF_PREFIX = "hf:"
MODEL_TYPES = {"llama": "llama", "llama4_text": "llama4", "nemotron": "nemotron"}
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "llama4": "Llama4ForCausalLM", "nemotron": "NemotronForCausalLM"}
_MODEL_TYPE = {family: mt for mt, family in MODEL_TYPES.items()}
_DEFAULT_THETA = {"llama": 10000.0, "llama4": 500000.0, "nemotron": 10000.0}
#: Fields of a spec that are not architecture: a checkpoint fits whatever they are.
NOT_ARCHITECTURE = ("seq_len", "assumptions")


def read_hf_config(directory: Path) -> dict[str, Any]:
    """The ``config.json`` of a transformers checkpoint folder; one line when unusable."""
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise LlmbError(f"hf:{directory}: no such folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LlmbError(f"hf:{directory}: no {CONFIG_FILE} (a transformers checkpoint folder has one)") from None
    except (OSError, ValueError) as exc:
        raise LlmbError(f"{path}: cannot read it as JSON: {exc}") from None
    if not isinstance(config, dict):
        raise LlmbError(f"{path}: not a JSON object")
    return config


def _rope(cfg: dict[str, Any], family: str) -> tuple[float, RopeScaling | None, float]:
    """(theta, llama3 scaling or None, partial rotary factor) from transformers 5's
    ``rope_parameters`` or the older top-level ``rope_theta`` / ``rope_scaling`` keys."""
    params = dict(cfg.get("rope_parameters") or {})
    legacy = dict(cfg.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", cfg.get("rope_theta", _DEFAULT_THETA[family])))
    kind = params.get("rope_type") or legacy.get("rope_type") or legacy.get("type") or "default"
    partial = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor"))
    if partial is None:
        partial = 0.5 if family == "nemotron" else 1.0  # transformers' defaults
    if kind == "default":
        return theta, None, float(partial)
    if kind != "llama3":
        raise LlmbError(f"RoPE type {kind!r} is not implemented by the llmb engine (it has default and llama3)")
    source = params if "factor" in params else legacy
    try:
        scaling = RopeScaling(
            factor=float(source["factor"]), low_freq_factor=float(source["low_freq_factor"]),
            high_freq_factor=float(source["high_freq_factor"]),
            original_context=int(source["original_max_position_embeddings"]),
        )
    except KeyError as exc:
        raise LlmbError(f"llama3 RoPE scaling without {exc.args[0]}") from None
    except ValidationError as exc:
        raise LlmbError(f"llama3 RoPE scaling: {exc.errors()[0]['msg']}") from None
    return theta, scaling, float(partial)


def _refuse(cfg: dict[str, Any], key: str, allowed: Any, what: str) -> None:
    value = cfg.get(key, allowed)
    if value != allowed:
        raise LlmbError(f"{key} = {value!r}: {what} is not implemented by the llmb engine")


def _int(cfg: dict[str, Any], key: str) -> int:
    try:
        value = cfg[key]
    except KeyError:
        raise LlmbError(f"the config has no {key}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise LlmbError(f"{key} must be a whole number, got {value!r}")
    return value


def spec_from_hf(cfg: dict[str, Any], seq_len: int | None = None, name: str = CONFIG_FILE) -> ModelSpec:
    """The :class:`ModelSpec` a transformers config describes, at ``seq_len`` tokens per sample
    (default: its ``max_position_embeddings``). ``name`` prefixes every error."""
    try:
        return _spec_from_hf(cfg, seq_len)
    except LlmbError as exc:
        raise LlmbError(f"{name}: {exc}") from None


def _spec_from_hf(cfg: dict[str, Any], seq_len: int | None) -> ModelSpec:
    model_type = cfg.get("model_type")
    if model_type == "llama4":
        raise LlmbError("a multimodal Llama 4 checkpoint (model_type llama4); llmb reads the text model (llama4_text)")
    if model_type not in MODEL_TYPES:
        raise LlmbError(f"model_type {model_type!r} is not one llmb builds ({', '.join(MODEL_TYPES)})")
    family = MODEL_TYPES[model_type]
    layers, hidden, heads = _int(cfg, "num_hidden_layers"), _int(cfg, "hidden_size"), _int(cfg, "num_attention_heads")
    seq = seq_len if seq_len is not None else _int(cfg, "max_position_embeddings")
    head_dim = cfg.get("head_dim") or None
    theta, scaling, partial = _rope(cfg, family)
    for key in ("attention_bias", "mlp_bias"):
        _refuse(cfg, key, False, "a bias in the linear layers")
    _refuse(cfg, "pretraining_tp", 1, "tensor-parallel-split linear layers")
    act = cfg.get("hidden_act", "relu2" if family == "nemotron" else "silu")
    fields: dict[str, Any] = dict(
        family=family, layers=layers, hidden=hidden, heads=heads,
        query_groups=cfg.get("num_key_value_heads") or heads,
        head_dim=None if head_dim in (None, hidden // heads) and hidden % heads == 0 else head_dim,
        vocab=_int(cfg, "vocab_size"), seq_len=seq, tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        rope_theta=theta, rope_scaling=scaling, rotary_percent=partial,
        assumptions="read from a transformers config.json",
    )
    if family == "nemotron":
        if act != "relu2":
            raise LlmbError(f"hidden_act {act!r}: llmb's Nemotron MLP is squared ReLU (relu2)")
        fields.update(ffn_hidden=_int(cfg, "intermediate_size"), activation="squared_relu", norm="layernorm",
                      layernorm_zero_centered_gamma=True, norm_eps=float(cfg.get("norm_eps", 1e-5)))
    else:
        if act != "silu":
            raise LlmbError(f"hidden_act {act!r}: llmb's {family} MLP is SwiGLU (silu)")
        if partial != 1.0:
            raise LlmbError(f"partial_rotary_factor {partial}: transformers' {model_type} rotates every channel")
        eps = cfg.get("rms_norm_eps", 1e-6 if family == "llama" else 1e-5)  # transformers' defaults
        fields.update(activation="swiglu", norm="rmsnorm", norm_eps=float(eps))
        if family == "llama":
            fields["ffn_hidden"] = _int(cfg, "intermediate_size")
        else:
            fields.update(_llama4_fields(cfg, layers, seq))
    try:
        return ModelSpec(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise LlmbError(f"{'.'.join(map(str, first['loc'])) or 'model'}: {first['msg']}") from None


def _llama4_fields(cfg: dict[str, Any], layers: int, seq: int) -> dict[str, Any]:
    _refuse(cfg, "use_qk_norm", False, "QK-norm (Llama 4 Scout)")
    interval = cfg.get("no_rope_layer_interval", 4)
    pattern = cfg.get("no_rope_layers") or [int((i + 1) % interval != 0) for i in range(layers)]
    if len(pattern) != layers:
        raise LlmbError(f"no_rope_layers has {len(pattern)} entries for {layers} layers")
    nope = [i for i, rope in enumerate(pattern) if not rope]
    every = nope[0] + 1 if nope else None
    if nope and nope != list(range(every - 1, layers, every)):
        raise LlmbError(f"NoPE layers {nope} are not every n-th layer, the only pattern llmb builds")
    if nope and cfg.get("attn_temperature_tuning", True) and seq >= int(cfg.get("floor_scale", 8192)):
        raise LlmbError(
            f"attention temperature tuning scales NoPE queries from position {int(cfg.get('floor_scale', 8192)) - 1} "
            f"on, within a sequence of {seq}: not implemented by the llmb engine"
        )
    chunk = cfg.get("attention_chunk_size", 8192)  # transformers' default
    if chunk is not None and len(nope) < layers and seq > int(chunk):
        raise LlmbError(f"chunked attention ({chunk} tokens) at a sequence of {seq}: not implemented by the llmb engine")
    moe_layers = cfg.get("moe_layers")
    if moe_layers is None:
        step = int(cfg.get("interleave_moe_layer_step", 1))
        moe_layers = list(range(step - 1, layers, step))
    fields: dict[str, Any] = dict(ffn_hidden=_int(cfg, "intermediate_size_mlp"), nope_layer_interval=every)
    if moe_layers:
        first = moe_layers[0]
        step = moe_layers[1] - first if len(moe_layers) > 1 else layers
        if moe_layers != list(range(first, layers, step)):
            raise LlmbError(f"MoE layers {moe_layers} are not every n-th layer from the first, the only pattern llmb builds")
        width = _int(cfg, "intermediate_size")
        fields["moe"] = MoESpec(
            num_experts=_int(cfg, "num_local_experts"), top_k=_int(cfg, "num_experts_per_tok"),
            expert_ffn_hidden=width, shared_experts=1, shared_expert_ffn_hidden=width,
            layer_step=step, first_layer=first, apply_probs_on_input=True,
        )
    return fields


def hf_config_from_spec(spec: ModelSpec, dtype: str = "float32") -> dict[str, Any]:
    """A transformers ``config.json`` (as a dict) for the model ``spec`` describes, or one line
    saying why transformers' class for that family cannot express it."""
    family = spec.family
    if family == "llama4" and spec.moe is not None:
        m = spec.moe
        if m.shared_experts != 1 or m.shared_expert_ffn_hidden != m.expert_ffn_hidden or not m.apply_probs_on_input:
            raise LlmbError(
                "transformers' Llama 4 has one shared expert of the routed experts' width and the router score "
                "on the expert input; this model differs"
            )
    want = {"llama": ("swiglu", "rmsnorm", False), "llama4": ("swiglu", "rmsnorm", False),
            "nemotron": ("squared_relu", "layernorm", True)}[family]
    got = (spec.activation, spec.norm, spec.layernorm_zero_centered_gamma)
    if got != want:
        raise LlmbError(f"transformers' {_MODEL_TYPE[family]} is {want}, this model is {got} (activation, norm, zero-centred gamma)")
    if family != "nemotron" and spec.rotary_percent != 1.0:
        raise LlmbError(f"transformers' {_MODEL_TYPE[family]} rotates every channel; this model rotates {spec.rotary_percent:g}")
    if family != "llama4" and spec.nope_layer_interval is not None:
        raise LlmbError(f"transformers' {_MODEL_TYPE[family]} has no NoPE layers")
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": spec.rope_theta}
    if spec.rope_scaling is not None:
        s = spec.rope_scaling
        rope.update(rope_type="llama3", factor=s.factor, low_freq_factor=s.low_freq_factor,
                    high_freq_factor=s.high_freq_factor, original_max_position_embeddings=s.original_context)
    if family == "nemotron":
        rope["partial_rotary_factor"] = spec.rotary_percent
    cfg: dict[str, Any] = {
        "architectures": [_ARCHITECTURES[family]], "model_type": _MODEL_TYPE[family],
        "vocab_size": spec.vocab, "hidden_size": spec.hidden, "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads, "num_key_value_heads": spec.query_groups, "head_dim": spec.kv_channels,
        "max_position_embeddings": spec.seq_len, "tie_word_embeddings": spec.tied_embeddings,
        "attention_bias": False, "rope_parameters": rope, "dtype": dtype,
    }
    if family == "nemotron":
        cfg.update(intermediate_size=spec.ffn_hidden, hidden_act="relu2", norm_eps=spec.norm_eps, mlp_bias=False)
    elif family == "llama":
        cfg.update(intermediate_size=spec.ffn_hidden, hidden_act="silu", rms_norm_eps=spec.norm_eps, mlp_bias=False)
    else:
        m = spec.moe
        cfg.update(
            hidden_act="silu", rms_norm_eps=spec.norm_eps, intermediate_size_mlp=spec.ffn_hidden,
            intermediate_size=m.expert_ffn_hidden if m else spec.ffn_hidden,
            num_local_experts=m.num_experts if m else 1, num_experts_per_tok=m.top_k if m else 1,
            moe_layers=[i for i in range(spec.layers) if spec.is_moe_layer(i)],
            no_rope_layers=[int(spec.uses_rope(i)) for i in range(spec.layers)],
            no_rope_layer_interval=spec.nope_layer_interval or spec.layers + 1,
            use_qk_norm=False,
            # What the engine computes: full causal attention and no temperature tuning at any
            # length (Maverick's published 8192 for both changes nothing below 8192 tokens).
            attention_chunk_size=max(spec.seq_len, 8192), attn_temperature_tuning=False,
        )
    return cfg


def architecture_differences(a: ModelSpec, b: ModelSpec) -> list[str]:
    """``field: a vs b`` for every architecture field in which two specs differ (the sequence
    length and the notes are not architecture)."""
    da, db = a.model_dump(), b.model_dump()
    out = []
    for key in da:
        if key not in NOT_ARCHITECTURE and da[key] != db[key]:
            if isinstance(da[key], dict) and isinstance(db[key], dict):
                # a capacity factor is the recipe's routing (tokens dropped beyond it), not
                # something the weights hold: a Hugging Face config has none
                sub = [f"{key}.{k}: {da[key][k]!r} vs {db[key].get(k)!r}" for k in da[key]
                       if k not in ("assumptions", "capacity_factor") and da[key][k] != db[key].get(k)]
                out += sub
            else:
                out.append(f"{key}: {da[key]!r} vs {db[key]!r}")
    return out
