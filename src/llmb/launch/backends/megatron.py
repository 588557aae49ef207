"""Megatron-LM: ``pretrain_gpt.py`` under torchrun, with the catalog's model and layout as
Megatron's own flags.

Flags follow ``megatron/training/arguments.py`` of Megatron-LM ``core_r0.12.0`` (the seed
``megatron_llama3_fp8.md`` pins that branch) and the shape of its example
``examples/llama/train_llama3_8b_h100_fp8.sh`` (first tagged in ``core_v0.13.0``): FP8 as
``--fp8-format hybrid --fp8-amax-history-len 1024 --fp8-amax-compute-algo max``, mock data with
the NullTokenizer, distributed optimizer with overlapped gradient reduction and parameter
gather. ``tests/test_backends.py`` checks every flag emitted against the flag list extracted
from that file (``tests/golden/frameworks/``).

The seed runs it in ``nvcr.io/nvidia/pytorch:25.03-py3`` with a Megatron-LM checkout mounted;
llmb mounts ``backends.megatron.source`` (cluster_config.yaml) at :data:`SOURCE_IN_CONTAINER`.
"""

from __future__ import annotations

from llmb.launch.backends.base import (
    FrameworkLaunch,
    Target,
    admit,
    attention_env,
    check_data,
    check_options,
    nsys_prefix,
    refuse,
    start_checkpoint,
    steps_of,
    trace_env,
)
from llmb.plan.run import ResolvedRun

NAME = "megatron"
LOG_FORMAT = "megatron"
IMAGE = "nvcr.io/nvidia/pytorch:25.03-py3"
SOURCE_IN_CONTAINER = "/opt/megatron-lm"
VERSION = "Megatron-LM core_r0.12.0"
CHECKED_AGAINST = (
    "NVIDIA/Megatron-LM megatron/training/arguments.py @ core_r0.12.0 (5cb6dbb3ed04)",
    "NVIDIA/Megatron-LM examples/llama/train_llama3_8b_h100_fp8.sh @ core_v0.13.0 (c550cf6c41c3)",
)
# Megatron's default RoPE scaling (megatron/core/models/common/embeddings/rope_utils.py at
# core_r0.12.0: low_freq_factor 1, high_freq_factor 4, original context 8192); only the factor
# has a flag (--rope-scaling-factor).
_ROPE_FIXED = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_context": 8192}
_RECOMPUTE = {
    "full": ["--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", "1"],
    "selective": ["--recompute-granularity", "selective"],
}


def supports(run: ResolvedRun) -> str | None:
    """Why this workload cannot be expressed (None: it can)."""
    m = run.model
    if m.moe is not None or m.nope_layer_interval is not None:
        return (f"{VERSION} has no flag for Llama 4's layers without RoPE (NoPE) nor for scaling the expert "
                "input by the router score (moe_apply_probs_on_input)")
    if m.rope_scaling is not None:
        fixed = {k: getattr(m.rope_scaling, k) for k in _ROPE_FIXED}
        if fixed != _ROPE_FIXED:
            return f"{VERSION} fixes RoPE scaling's {_ROPE_FIXED}; the model has {fixed}"
    return None


def _layout_flags(run: ResolvedRun) -> list[str]:
    lay, d = run.layout, run.derived
    flags = [
        "--tensor-model-parallel-size", str(lay.tp),
        "--pipeline-model-parallel-size", str(lay.pp),
        "--context-parallel-size", str(lay.cp),
    ]
    if lay.tp > 1:
        flags.append("--sequence-parallel")
        if run.recipe.tp_comm_overlap:
            # TE userbuffers overlap of the TP collectives with the GEMMs (needs sequence
            # parallelism), as NeMo's performance scripts the seed follows turn it on
            flags.append("--tp-comm-overlap")
    vp = lay.vp or 1
    if lay.pp > 1 and vp > 1:
        if lay.embedding_in_pipeline_split or lay.loss_in_pipeline_split:
            flags += ["--num-virtual-stages-per-pipeline-rank", str(vp)]
        else:
            flags += ["--num-layers-per-virtual-pipeline-stage", str(run.model.layers // (lay.pp * vp))]
    if lay.embedding_in_pipeline_split:
        flags.append("--account-for-embedding-in-pipeline-split")
    if lay.loss_in_pipeline_split:
        flags.append("--account-for-loss-in-pipeline-split")
    if lay.fsdp is not None and lay.fsdp > 1:
        if lay.fsdp != d.dp or lay.tp * lay.pp * lay.cp != 1:
            raise refuse(NAME, f"FSDP over groups of {lay.fsdp} of {d.dp} data-parallel ranks (HSDP) has no flag in "
                         f"{VERSION}; --use-torch-fsdp2 shards over every data-parallel rank")
        # Megatron-LM's validate_args: FSDP2 excludes the distributed optimizer and gradient
        # accumulation fusion, and needs a torch_dist/torch_dcp checkpoint format.
        flags += ["--use-torch-fsdp2", "--no-gradient-accumulation-fusion", "--ckpt-format", "torch_dist"]
    else:
        flags += ["--use-distributed-optimizer", "--overlap-grad-reduce", "--overlap-param-gather"]
    flags += ["--micro-batch-size", str(lay.mbs), "--global-batch-size", str(lay.gbs)]
    return flags


def _model_flags(run: ResolvedRun) -> list[str]:
    m = run.model
    flags = [
        "--use-mcore-models",
        "--num-layers", str(m.layers),
        "--hidden-size", str(m.hidden),
        "--ffn-hidden-size", str(m.ffn_hidden),
        "--num-attention-heads", str(m.heads),
        "--kv-channels", str(m.kv_channels),
        "--seq-length", str(m.seq_len),
        "--max-position-embeddings", str(m.seq_len),
        "--position-embedding-type", "rope",
        "--rotary-base", f"{m.rope_theta:g}",
        "--rotary-percent", f"{m.rotary_percent:g}",
        "--normalization", "RMSNorm" if m.norm == "rmsnorm" else "LayerNorm",
        "--norm-epsilon", f"{m.norm_eps:g}",
        "--attention-dropout", "0.0",
        "--hidden-dropout", "0.0",
        "--disable-bias-linear",
    ]
    if m.query_groups != m.heads:
        flags += ["--group-query-attention", "--num-query-groups", str(m.query_groups)]
    if m.rope_scaling is not None:
        flags += ["--use-rope-scaling", "--rope-scaling-factor", f"{m.rope_scaling.factor:g}"]
    if m.layernorm_zero_centered_gamma:
        flags.append("--apply-layernorm-1p")
    if m.activation != "gelu":  # Megatron's default activation is GeLU
        flags.append({"swiglu": "--swiglu", "squared_relu": "--squared-relu"}[m.activation])
    if not m.tied_embeddings:
        flags.append("--untie-embeddings-and-output-weights")
    return flags


def _precision_flags(dtype: str) -> list[str]:
    if dtype == "fp32":
        return []
    flags = ["--bf16"]
    if dtype == "fp8":
        flags += ["--fp8-format", "hybrid", "--fp8-amax-history-len", "1024", "--fp8-amax-compute-algo", "max",
                  "--fp8-param-gather"]
    return flags


def render(run: ResolvedRun, target: Target, source: str | None = None) -> FrameworkLaunch:
    """``source``: the Megatron-LM checkout as the job sees it (default: the container's mount)."""
    admit(run, NAME, supports(run))
    check_options(run, NAME)
    data = check_data(run, NAME, indexed_ok=True)
    req, opts, exp = run.request, run.options, target.exp_dir
    steps = steps_of(run)
    flags = _model_flags(run) + _layout_flags(run) + _precision_flags(run.recipe.dtype)
    row = run.recipe.row
    flags += _RECOMPUTE.get(row.recompute if row is not None else "", [])
    flags += [
        "--train-iters", str(steps),
        "--lr", f"{req.lr:g}",
        "--min-lr", f"{req.lr * req.min_lr_ratio:g}",
        "--lr-decay-style", "cosine",
        "--lr-warmup-iters", str(min(run.lr_warmup_steps, steps - 1)),
        "--weight-decay", f"{req.weight_decay:g}",
        "--clip-grad", f"{req.grad_clip:g}",
        "--adam-beta1", "0.9",
        "--adam-beta2", "0.95",
        "--seed", str(req.seed),
        "--tokenizer-type", "NullTokenizer",
        "--vocab-size", str(run.model.vocab),
    ]
    flags += ["--data-path", data, "--split", "100,0,0"] if data else ["--mock-data"]
    flags += [
        "--no-create-attention-mask-in-dataloader",
        "--num-workers", "1",
        "--eval-iters", "0",
        "--eval-interval", str(steps + 1),
        "--log-interval", "1",
        "--log-throughput",
        "--tensorboard-dir", f"{exp}/tensorboard",
        "--distributed-timeout-minutes", str(max(1, round(opts.pg_timeout_s / 60))),
    ]
    if opts.save_at_end:
        flags += ["--save", f"{exp}/checkpoints", "--save-interval", str(steps)]
        if "--ckpt-format" not in flags:
            flags += ["--ckpt-format", "torch_dist"]
    load = start_checkpoint(run)
    if load:
        flags += ["--load", load, "--exit-on-missing-checkpoint"]
    prefix: list[str] = []
    if opts.profile:
        # Megatron calls cudaProfilerStart/Stop at these iterations (nsys profile mode).
        flags += ["--profile", "--profile-step-start", str(opts.profile_start_step),
                  "--profile-step-end", str(opts.profile_stop_step + 1)]
        prefix = nsys_prefix(exp)
    script = f"{source or SOURCE_IN_CONTAINER}/pretrain_gpt.py"
    # Megatron-LM's validate_args: TP or CP need CUDA_DEVICE_MAX_CONNECTIONS=1, FSDP needs more than one.
    connections = "8" if "--use-torch-fsdp2" in flags else "1"
    env = {"CUDA_DEVICE_MAX_CONNECTIONS": connections, **attention_env(run), **trace_env(run)}
    return FrameworkLaunch(
        backend=NAME, log_format=LOG_FORMAT, launcher="torchrun", command=(script, *flags), env=env, image=IMAGE,
        workdir=source or SOURCE_IN_CONTAINER, checked_against=CHECKED_AGAINST,
        wrapper=tuple(prefix),
    )
