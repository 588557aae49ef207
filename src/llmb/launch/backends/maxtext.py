"""MaxText (JAX): ``MaxText/train.py MaxText/configs/base.yml key=value ...``, one process per
node driving all of its GPUs (``hardware=gpu``: MaxText starts ``jax.distributed`` from the
``JAX_COORDINATOR_IP``/``JAX_COORDINATOR_PORT``/``NNODES``/``NODE_RANK`` that llmb's batch
script gives the launcher ``node``; ``hardware=gpu_multiprocess`` would instead let jax read
Slurm's task variables, which assume one process per GPU),
in ``ghcr.io/nvidia/jax:maxtext-2024-12-09`` as the seed runs it.

Keys are those of ``MaxText/configs/base.yml`` at AI-Hypercomputer/maxtext ``0fe43b75a285``
(2024-12-09, the day of the seed's container): MaxText refuses any other key ("Key ... was
passed at the command line but isn't in config", ``MaxText/pyconfig.py``). The layout becomes
MaxText's mesh: ``ici_*`` axes inside a node, ``dcn_*`` across nodes, FSDP groups of the
catalog's size with data-parallel replicas on top, ``per_device_batch_size`` = MBS
(global batch = devices x per_device_batch_size x gradient_accumulation_steps, MaxText's
``calculate_global_batch_sizes``).
"""

from __future__ import annotations

from llmb.launch.backends.base import (
    FrameworkLaunch,
    Target,
    admit,
    check_data,
    check_options,
    no_moe,
    nsys_prefix,
    refuse,
    start_checkpoint,
    steps_of,
    trace_env,
)
from llmb.plan.run import ResolvedRun

NAME = "maxtext"
LOG_FORMAT = "maxtext"
IMAGE = "ghcr.io/nvidia/jax:maxtext-2024-12-09"
WORKDIR = "/opt/maxtext"
VERSION = "MaxText 0fe43b75a285 (2024-12-09)"
CHECKED_AGAINST = (
    "AI-Hypercomputer/maxtext MaxText/configs/base.yml @ 0fe43b75a285 (2024-12-09)",
    "AI-Hypercomputer/maxtext MaxText/pyconfig.py @ 0fe43b75a285",
)
_REMAT = {"save_qkv": "save_qkv_proj", "full": "full", "none": "minimal", "mlp": "save_dot_except_mlp"}
#: catalog model -> MaxText's own model config (MaxText/configs/models/<name>.yml), used as the
#: recipe does (``model_name=llama2-70b``) when the run is that model at full size. Its keys
#: must then not be passed again (pyconfig's validate_no_keys_overwritten_twice); that the
#: catalog's constants equal the file's is a test (tests/test_backends.py).
MODEL_NAMES = {("llama2-maxtext", "70b"): "llama2-70b"}
MODEL_KEYS = ("decoder_block", "base_emb_dim", "base_num_query_heads", "base_num_kv_heads", "base_mlp_dim",
              "base_num_decoder_layers", "head_dim", "vocab_size", "normalization_layer_epsilon",
              "logits_via_embedding")


def supports(run: ResolvedRun) -> str | None:
    m = run.model
    if m.family != "llama" or m.activation != "swiglu" or m.norm != "rmsnorm":
        return f"{VERSION}'s decoder blocks for this recipe are Llama's (RMSNorm, SwiGLU); {m.family} is not one"
    if m.rope_scaling is not None:
        return f"{VERSION} has no Llama 3.1 RoPE scaling key (its llama3.1 model configs omit it)"
    lay = run.layout
    if lay.cp > 1:
        return f"{VERSION} has no context parallelism (CP {lay.cp}); ici_sequence_parallelism is not the same split"
    if lay.pp > 1 and (lay.vp or 1) > 1:
        return f"{VERSION}'s pipeline has no interleaved virtual stages (VP {lay.vp})"
    return None


def mesh(run: ResolvedRun, target: Target) -> dict[str, int]:
    """MaxText's ici_/dcn_ parallelism for the layout on ``target`` (every product checked)."""
    lay, d = run.layout, run.derived
    g, nodes = target.ranks_per_node, target.nodes
    fsdp = lay.fsdp or 1
    replicas = d.dp // fsdp  # data-parallel replicas of each FSDP group
    ici = {"tensor": lay.tp, "pipeline": lay.pp}
    if g % (lay.tp * lay.pp):
        raise refuse(NAME, f"TP {lay.tp} x PP {lay.pp} must fit inside a node of {g} GPUs (MaxText's ICI axes)")
    left = g // (lay.tp * lay.pp)
    ici["fsdp"] = next(f for f in range(min(left, fsdp), 0, -1) if left % f == 0 and fsdp % f == 0)
    ici["data"] = left // ici["fsdp"]
    dcn = {"fsdp": fsdp // ici["fsdp"], "data": replicas // ici["data"] if replicas % ici["data"] == 0 else 0}
    if dcn["data"] == 0 or dcn["fsdp"] * dcn["data"] != nodes:
        raise refuse(NAME, f"FSDP {fsdp} x DP {replicas} x TP {lay.tp} x PP {lay.pp} does not map onto {nodes} node(s) "
                     f"of {g} GPUs as MaxText ici_/dcn_ axes")
    out = {f"ici_{k}_parallelism": v for k, v in ici.items()}
    out.update({f"dcn_{k}_parallelism": v for k, v in dcn.items()})
    out.update({"dcn_tensor_parallelism": 1, "dcn_pipeline_parallelism": 1})
    return out


def keys(run: ResolvedRun, target: Target) -> dict[str, object]:
    admit(run, NAME, supports(run))
    no_moe(run, NAME, "not in this recipe's MaxText")
    check_options(run, NAME)
    check_data(run, NAME, indexed_ok=False)
    m, lay, d, req, opts, exp = run.model, run.layout, run.derived, run.request, run.options, target.exp_dir
    steps = steps_of(run)
    row = run.recipe.row
    k: dict[str, object] = {
        "run_name": "llmb", "base_output_directory": f"{exp}/maxtext",
        "hardware": "gpu" if target.device == "cuda" else "cpu",
        "model_name": "default", "decoder_block": "llama2",
        "base_emb_dim": m.hidden, "base_num_query_heads": m.heads, "base_num_kv_heads": m.query_groups,
        "base_mlp_dim": m.ffn_hidden, "base_num_decoder_layers": m.layers, "head_dim": m.kv_channels,
        "vocab_size": m.vocab, "normalization_layer_epsilon": m.norm_eps, "rope_max_timescale": int(m.rope_theta),
        "logits_via_embedding": m.tied_embeddings, "enable_dropout": False,
        "max_target_length": m.seq_len, "per_device_batch_size": float(lay.mbs),
        "gradient_accumulation_steps": d.ga,
        **mesh(run, target),
        "dtype": "float32" if run.recipe.dtype == "fp32" else "bfloat16",
        "quantization": "fp8" if run.recipe.dtype == "fp8" else "",
        "remat_policy": _REMAT.get(row.recompute if row is not None and row.recompute else "full", "full"),
        "attention": "cudnn_flash_te" if target.device == "cuda" else "dot_product",
        "dataset_type": "synthetic", "steps": steps, "log_period": 1,
        "learning_rate": req.lr, "cosine_learning_rate_final_fraction": req.min_lr_ratio,
        "warmup_steps_fraction": round(min(run.lr_warmup_steps, steps - 1) / steps, 6),
        "adam_weight_decay": req.weight_decay, "gradient_clipping_threshold": req.grad_clip,
        "init_weights_seed": req.seed % 2**31,
        "enable_checkpointing": opts.save_at_end, "async_checkpointing": False,
        "checkpoint_period": steps,
    }
    model_name = MODEL_NAMES.get((run.recipe.workload.name, run.recipe.size)) if run.proxy is None else None
    if model_name is not None and run.model == run.full_model:
        k["model_name"] = model_name
        for key in MODEL_KEYS:
            del k[key]
    load = start_checkpoint(run)
    if load:
        k["load_full_state_path"] = load
    if opts.profile:
        k.update({"profiler": "nsys", "skip_first_n_steps_for_profiler": opts.profile_start_step - 1,
                  "profiler_steps": opts.profile_stop_step - opts.profile_start_step + 1})
    return k


def _v(value: object) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return f"{value:g}" if isinstance(value, float) else str(value)


def render(run: ResolvedRun, target: Target) -> FrameworkLaunch:
    args = [f"{k}={_v(v)}" for k, v in keys(run, target).items()]
    return FrameworkLaunch(
        backend=NAME, log_format=LOG_FORMAT, launcher="node",
        command=("python3", "-u", "MaxText/train.py", "MaxText/configs/base.yml", *args),
        env={"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.90", **trace_env(run)}, image=IMAGE, workdir=WORKDIR,
        wrapper=tuple(nsys_prefix(target.exp_dir)) if run.options.profile else (), checked_against=CHECKED_AGAINST,
    )
