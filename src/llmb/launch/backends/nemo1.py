"""NeMo 1 (the NeMo Launcher's training stage): ``megatron_gpt_pretraining.py`` with Hydra
overrides of its ``megatron_gpt_config.yaml``, one process per GPU under ``srun`` (NeMo 1 reads
Slurm's task variables itself), in ``nvcr.io/nvidia/nemo:24.09`` as the Nemotron-4 seed runs it.

Every override names a key of ``examples/nlp/language_modeling/conf/megatron_gpt_config.yaml``
at NVIDIA/NeMo ``v2.0.0`` (the NeMo of the 24.09 container); keys that file lacks but the model
reads (``cfg.get``) are appended with Hydra's ``+``. ``tests/test_backends.py`` checks both
against the key list extracted from that file. The model constants are the catalog's (the
Launcher's ``conf/training/nemotron/nemotron_340b.yaml`` at tag 24.09 sets the same ones).

NeMo 1 builds a real tokenizer even on mock data: ``backends.nemo1.tokenizer_model`` in
cluster_config.yaml names a SentencePiece model (256000 tokens for Nemotron-4).
"""

from __future__ import annotations

import re
import shlex

from llmb.launch.backends.base import (
    FrameworkLaunch,
    Target,
    admit,
    check_data,
    check_options,
    no_moe,
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
)
_ACT = {"squared_relu": "squared-relu", "swiglu": "fast-swiglu", "gelu": "gelu"}
#: what a Hydra override value may hold unquoted (its grammar gives quotes, blanks, brackets,
#: commas and $ meanings of their own)
_HYDRA_SAFE = re.compile(r"^[A-Za-z0-9_./+:-]*$")


def supports(run: ResolvedRun) -> str | None:
    if run.recipe.workload.framework != "nemo1":
        return ("llmb's nemo1 backend renders the NeMo Launcher's training stage for the recipes published with it "
                "(nemotron4); use --backend nemo2")
    return None


def _v(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return f"{value:g}" if isinstance(value, float) else str(value)


def overrides(run: ResolvedRun, target: Target, tokenizer_model: str | None) -> list[str]:
    """Hydra overrides (``key=value``; ``+key=value`` for keys the base config lacks)."""
    admit(run, NAME, supports(run))
    # Grok-1's NeMo 1 runs: NeMo 1's MoE settings (and Grok's soft cap, multipliers and extra
    # norms) are not mapped yet.
    no_moe(run, NAME, "llmb does not map its experts, soft cap, multipliers and extra norms to NeMo 1 settings yet")
    if run.layout.fsdp:
        raise refuse(NAME, "an FSDP group size has no NeMo 1 setting")
    if run.model.rope_scaling is not None:
        raise refuse(NAME, f"{VERSION}'s GPT model has no Llama 3.1 RoPE scaling setting")
    check_options(run, NAME)
    data = check_data(run, NAME, indexed_ok=True)
    m, lay, req, opts, exp = run.model, run.layout, run.request, run.options, target.exp_dir
    steps = steps_of(run)
    dtype = run.recipe.dtype
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
        "model.virtual_pipeline_model_parallel_size": lay.vp if lay.pp > 1 and (lay.vp or 1) > 1 else None,
        "model.sequence_parallel": lay.tp > 1,
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
        "model.tokenizer.library": "sentencepiece", "model.tokenizer.type": None,
        "model.tokenizer.model": tokenizer_model or TOKENIZER_UNSET,
        "model.fp8": dtype == "fp8", "model.fp8_hybrid": True, "model.fp8_amax_history_len": 1024,
        "model.fp8_amax_compute_algo": "max",
    }
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
    if opts.save_at_end:
        appended["exp_manager.checkpoint_callback_params.every_n_train_steps"] = steps
    paths = {"exp_manager.explicit_log_dir": f"{exp}/nemo", "model.tokenizer.model": tokenizer_model or "",
             "--data": data or "", "LOAD_CHECKPOINT_PATH": load or ""}
    for what, value in paths.items():
        if not _HYDRA_SAFE.match(value):
            raise refuse(NAME, f"{what} {value}: NeMo 1 reads its settings as Hydra overrides, which llmb writes only "
                         "for paths of letters, digits and _./+-:")
    return [f"{k}={_v(v)}" for k, v in o.items()] + [f"+{k}={_v(v)}" for k, v in appended.items()]


def render(run: ResolvedRun, target: Target, tokenizer_model: str | None = None) -> FrameworkLaunch:
    over = overrides(run, target, tokenizer_model)
    notes = ()
    if tokenizer_model is None:
        notes = (f"set backends.nemo1.tokenizer_model in cluster_config.yaml: the command names {TOKENIZER_UNSET}",)
    # Profiling: NeMo 1 calls cudaProfilerStart/Stop itself (model.nsys_profile); nsys is the
    # process's wrapper, one per task.
    wrapper = ("nsys", "profile", "--force-overwrite=true", "--trace=cuda,nvtx,osrt", "--capture-range=cudaProfilerApi",
               "--capture-range-end=stop", "-o", f"{target.exp_dir}/profiles/nsys_%h_%p") if run.options.profile else ()
    return FrameworkLaunch(
        backend=NAME, log_format=LOG_FORMAT, launcher="task", command=("python3", "-u", ENTRY, *over),
        files={"nemo1_overrides.txt": "\n".join(shlex.quote(x) for x in over) + "\n"},
        env={"CUDA_DEVICE_MAX_CONNECTIONS": "1", **trace_env(run)}, image=IMAGE, workdir=target.exp_dir,
        wrapper=wrapper, notes=notes, checked_against=CHECKED_AGAINST,
    )
