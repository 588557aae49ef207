"""NeMo 1 (the NeMo Launcher's training stage): ``megatron_gpt_pretraining.py`` with Hydra
overrides of its ``megatron_gpt_config.yaml``, one process per GPU under ``srun`` (NeMo 1 reads
Slurm's task variables itself), in ``nvcr.io/nvidia/nemo:24.09`` as the Nemotron-4 seed runs it.

Every override names a key of ``examples/nlp/language_modeling/conf/megatron_gpt_config.yaml``
at NVIDIA/NeMo ``v2.0.0`` (the NeMo of the 24.09 container); keys that file lacks but the model
reads (``cfg.get``) are appended with Hydra's ``+``. ``tests/test_backends.py`` checks both
against the key list extracted from that file. The model constants are the catalog's (the
Launcher's ``conf/training/nemotron/nemotron_340b.yaml`` at tag 24.09 sets the same ones).

NeMo 1 builds a real tokenizer even on mock data: ``backends.nemo1.tokenizer_model`` in
cluster_config.yaml names a SentencePiece model (256000 tokens for Nemotron-4). Grok-1's recipe
uses the Hugging Face Llama 3 tokenizer as its proxy (128256 tokens, ``meta-llama/Meta-Llama-3-70B``,
which needs the model's licence accepted); ``tokenizer_model`` then names a local copy instead.
"""

from __future__ import annotations

import re
import shlex

from llmb.launch.backends.base import (
    FrameworkLaunch,
    Target,
    admit,
    attention_env,
    check_data,
    check_options,
    extras_note,
    refuse,
    start_checkpoint,
    steps_of,
    trace_env,
)
from llmb.plan.run import ResolvedRun

NAME = "nemo1"
LOG_FORMAT = "nemo1"
IMAGE = "nvcr.io/nvidia/nemo:24.09"
ENTRY = "/opt/NeMo/examples/nlp/language_modeling/megatron_gpt_pretraining.py"
VERSION = "NeMo v2.0.0 (nemo:24.09)"
TOKENIZER_UNSET = "TOKENIZER_MODEL_NOT_SET"
CHECKED_AGAINST = (
    "NVIDIA/NeMo examples/nlp/language_modeling/conf/megatron_gpt_config.yaml @ v2.0.0 (e938df327c6d)",
    "NVIDIA/NeMo-Framework-Launcher launcher_scripts/conf/training/nemotron/nemotron_340b.yaml @ 24.09 (35e439393e2e)",
    "NVIDIA/dgxc-benchmarking grok1/grok1_314b.yaml + grok1/configure.sh (v25.02, the NeMo 1 Grok-1 recipe)",
    "NVIDIA/dgxc-benchmarking nemotron/configure.sh (v24.11.1, the NeMo 1 Nemotron-4 340B recipe's overrides)",
)
_ACT = {"squared_relu": "squared-relu", "swiglu": "fast-swiglu", "gelu": "gelu", "geglu": "fast-geglu"}
#: The MoE settings of the published Grok-1 NeMo 1 recipe (dgxc-benchmarking grok1/grok1_314b.yaml):
#: token-choice all-to-all dispatch, no grouped GEMM, experts padded to the capacity factor (the
#: catalog's ``capacity_factor``, 1.0 for Grok-1), the aux loss. NeMo 1 reads every Megatron-Core
#: TransformerConfig field of ``model`` by its name (megatron_base_model.py
#: ``build_transformer_config`` @ v2.0.0), so they are appended keys.
RECIPE_MOE = {"moe_token_dispatcher_type": "alltoall", "moe_grouped_gemm": False}
RECIPE_AUX_LOSS = 0.01
#: workloads whose published NeMo 1 recipe names a Hugging Face tokenizer (library, name)
HF_TOKENIZER = {"grok1": ("huggingface", "meta-llama/Meta-Llama-3-70B")}
#: what a Hydra override value may hold unquoted (its grammar gives quotes, blanks, brackets,
#: commas and $ meanings of their own)
_HYDRA_SAFE = re.compile(r"^[A-Za-z0-9_./+:-]*$")


def supports(run: ResolvedRun) -> str | None:
    wl = run.recipe.workload
    if "nemo1" not in {wl.framework_of(s) for s in wl.sources} | {wl.framework}:
        return ("llmb's nemo1 backend renders the NeMo Launcher's training stage for the recipes published with it "
                "(nemotron4, grok1); use --backend nemo2")
    return None


def _moe(run: ResolvedRun) -> dict[str, object]:
    """The experts as NeMo 1 (Megatron-Core 0.9 in nemo:24.09) settings; one line for what it
    cannot express."""
    m, moe = run.model, run.model.moe
    assert moe is not None
    if not all(map(m.is_moe_layer, range(m.layers))):
        raise refuse(NAME, "NeMo 1 makes every layer a MoE layer; this model interleaves dense layers")
    if moe.shared_experts:
        raise refuse(NAME, "NeMo 1 (Megatron-Core 0.9) has no shared-expert setting")
    if moe.expert_ffn_hidden != m.ffn_hidden:
        raise refuse(NAME, "NeMo 1's experts are ffn_hidden_size wide; this model's experts differ from its FFN")
    if moe.router_score != "softmax" or not moe.normalize_top_k:
        raise refuse(NAME, "NeMo 1's router is Megatron-Core's default (softmax over the top-k, renormalised); "
                     "this model's gating differs")
    if run.derived.etp != run.layout.tp:
        raise refuse(NAME, f"Megatron-Core 0.9 splits experts over TP ({run.layout.tp}); ETP {run.derived.etp} has no "
                     "NeMo 1 setting")
    capacity = ({"moe_pad_expert_input_to_capacity": True, "moe_expert_capacity_factor": moe.capacity_factor}
                if moe.capacity_factor else {})
    return {"num_moe_experts": moe.num_experts, "moe_router_topk": moe.top_k, **RECIPE_MOE, **capacity,
            "moe_aux_loss_coeff": RECIPE_AUX_LOSS}


def _v(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _tokenizer(run: ResolvedRun, tokenizer_model: str | None) -> dict[str, object]:
    hf = HF_TOKENIZER.get(run.recipe.workload.name)
    if hf is not None:
        return {"model.tokenizer.library": hf[0], "model.tokenizer.type": tokenizer_model or hf[1],
                "model.tokenizer.model": None}
    return {"model.tokenizer.library": "sentencepiece", "model.tokenizer.type": None,
            "model.tokenizer.model": tokenizer_model or TOKENIZER_UNSET}


def overrides(run: ResolvedRun, target: Target, tokenizer_model: str | None) -> list[str]:
    """Hydra overrides (``key=value``; ``+key=value`` for keys the base config lacks)."""
    admit(run, NAME, supports(run))
    moe = _moe(run) if run.model.moe is not None else {}
    if run.layout.fsdp:
        raise refuse(NAME, "an FSDP group size has no NeMo 1 setting")
    if run.model.rope_scaling is not None:
        raise refuse(NAME, f"{VERSION}'s GPT model has no Llama 3.1 RoPE scaling setting")
    check_options(run, NAME)
    data = check_data(run, NAME, indexed_ok=True)
    m, lay, req, opts, exp = run.model, run.layout, run.request, run.options, target.exp_dir
    steps = steps_of(run)
    dtype = run.recipe.dtype
    vp = lay.vp if lay.pp > 1 and (lay.vp or 1) > 1 else None  # interleaved schedule
    o: dict[str, object] = {
        "trainer.num_nodes": target.nodes, "trainer.devices": target.ranks_per_node,
        "trainer.precision": "32" if dtype == "fp32" else "bf16",
        "trainer.max_steps": steps, "trainer.log_every_n_steps": 1, "trainer.val_check_interval": steps,
        "trainer.limit_val_batches": 0, "trainer.gradient_clip_val": req.grad_clip,
        "exp_manager.explicit_log_dir": f"{exp}/nemo", "exp_manager.create_checkpoint_callback": opts.save_at_end,
        "exp_manager.resume_if_exists": False,
        "model.mcore_gpt": True, "model.transformer_engine": True,
        "model.micro_batch_size": lay.mbs, "model.global_batch_size": lay.gbs,
        "model.tensor_model_parallel_size": lay.tp, "model.pipeline_model_parallel_size": lay.pp,
        **({"model.expert_model_parallel_size": lay.ep} if moe else {}),
        "model.virtual_pipeline_model_parallel_size": vp,
        "model.sequence_parallel": lay.tp > 1,
        # TE userbuffers overlap of the TP all-gathers/reduce-scatters with the GEMMs, as the
        # recipes' configure.sh turns it on (model.ub_tp_comm_overlap=true for Nemotron-4 and
        # Grok-1; the base config's default is false); it needs sequence parallelism.
        "model.ub_tp_comm_overlap": lay.tp > 1 and run.recipe.tp_comm_overlap,
        "model.encoder_seq_length": m.seq_len, "model.max_position_embeddings": m.seq_len,
        "model.num_layers": m.layers, "model.hidden_size": m.hidden, "model.ffn_hidden_size": m.ffn_hidden,
        "model.num_attention_heads": m.heads, "model.num_query_groups": m.query_groups,
        "model.kv_channels": m.kv_channels, "model.activation": _ACT[m.activation],
        "model.normalization": ("layernorm1p" if m.layernorm_zero_centered_gamma else m.norm),
        "model.layernorm_epsilon": m.norm_eps, "model.position_embedding_type": "rope",
        "model.rotary_percentage": m.rotary_percent, "model.bias": False,
        "model.share_embeddings_and_output_weights": m.tied_embeddings,
        "model.make_vocab_size_divisible_by": 128, "model.seed": req.seed,
        "model.optim.lr": req.lr, "model.optim.weight_decay": req.weight_decay,
        "model.optim.sched.min_lr": req.lr * req.min_lr_ratio,
        "model.optim.sched.warmup_steps": min(run.lr_warmup_steps, steps - 1),
        **_tokenizer(run, tokenizer_model),
        "model.fp8": dtype == "fp8", "model.fp8_hybrid": True, "model.fp8_amax_history_len": 1024,
        "model.fp8_amax_compute_algo": "max",
    }
    if vp is not None:
        # the interleaved schedule's p2p sends overlapped with compute, unbatched (both
        # recipes' settings: Nemotron-4's configure.sh, Grok-1's grok1_314b.yaml)
        o.update({"model.overlap_p2p_comm": True, "model.batch_p2p_comm": False})
    if data:
        o.update({"model.data.data_impl": "mmap", "model.data.data_prefix": f"[1.0,{data}]",
                  "model.data.splits_string": "100,0,0"})
    else:
        o.update({"model.data.data_impl": "mock", "model.data.data_prefix": "[]"})
    row = run.recipe.row
    if row is not None and row.recompute in ("selective", "full"):
        o["model.activations_checkpoint_granularity"] = row.recompute
        if row.recompute == "full":
            o.update({"model.activations_checkpoint_method": "uniform", "model.activations_checkpoint_num_layers": 1})
    if opts.profile:
        ranks = list(range(run.world)) if opts.profile_ranks == () else [0]
        o.update({"model.nsys_profile.enabled": True, "model.nsys_profile.start_step": opts.profile_start_step,
                  "model.nsys_profile.end_step": opts.profile_stop_step,
                  "model.nsys_profile.ranks": "[" + ",".join(map(str, ranks)) + "]"})
    load = start_checkpoint(run)
    if load:
        o["model.resume_from_checkpoint"] = load
    appended: dict[str, object] = {}
    if lay.cp > 1:
        appended["model.context_parallel_size"] = lay.cp
    if m.rope_theta != 10000.0:
        appended["model.rotary_base"] = m.rope_theta
    appended.update({f"model.{k}": v for k, v in moe.items()})
    if dtype == "fp8":
        # weights kept in FP8, so the distributed optimizer gathers FP8 parameters (both recipes'
        # configure.sh: model.fp8_params=${FP8}); the base config lacks the key
        appended["model.fp8_params"] = True
    if opts.save_at_end:
        appended["exp_manager.checkpoint_callback_params.every_n_train_steps"] = steps
    paths = {"exp_manager.explicit_log_dir": f"{exp}/nemo", "backends.nemo1.tokenizer_model": tokenizer_model or "",
             "--data": data or "", "LOAD_CHECKPOINT_PATH": load or ""}
    for what, value in paths.items():
        if not _HYDRA_SAFE.match(value):
            raise refuse(NAME, f"{what} {value}: NeMo 1 reads its settings as Hydra overrides, which llmb writes only "
                         "for paths of letters, digits and _./+-:")
    return [f"{k}={_v(v)}" for k, v in o.items()] + [f"+{k}={_v(v)}" for k, v in appended.items()]


def render(run: ResolvedRun, target: Target, tokenizer_model: str | None = None) -> FrameworkLaunch:
    over = overrides(run, target, tokenizer_model)
    notes: tuple[str, ...] = ()
    if tokenizer_model is None and run.recipe.workload.name not in HF_TOKENIZER:
        notes = (f"set backends.nemo1.tokenizer_model in cluster_config.yaml: the command names {TOKENIZER_UNSET}",)
    notes += extras_note(run, NAME)
    # Profiling: NeMo 1 calls cudaProfilerStart/Stop itself (model.nsys_profile); nsys is the
    # process's wrapper, one per task.
    wrapper = ("nsys", "profile", "--force-overwrite=true", "--trace=cuda,nvtx,osrt", "--capture-range=cudaProfilerApi",
               "--capture-range-end=stop", "-o", f"{target.exp_dir}/profiles/nsys_%h_%p") if run.options.profile else ()
    return FrameworkLaunch(
        backend=NAME, log_format=LOG_FORMAT, launcher="task", command=("python3", "-u", ENTRY, *over),
        files={"nemo1_overrides.txt": "\n".join(shlex.quote(x) for x in over) + "\n"},
        env={"CUDA_DEVICE_MAX_CONNECTIONS": "1", **attention_env(run), **trace_env(run)}, image=IMAGE, workdir=target.exp_dir,
        wrapper=wrapper, notes=notes, checked_against=CHECKED_AGAINST,
    )
