"""NeMo 2: the workload's NeMo 2 recipe (``nemo.collections.llm.recipes.<name>.pretrain_recipe``)
with the catalog's model, layout and step counts set on it, run by every rank under torchrun
(``run.run(recipe, direct=True)``).

The generated ``nemo2_pretrain.py`` sets the attributes NeMo's own performance scripts set
(``scripts/performance/utils.py`` ``set_primary_perf_configs`` at NVIDIA/NeMo ``v2.3.0``, the
NeMo of the seeds' ``nvcr.io/nvidia/nemo:25.04.01``): strategy parallel sizes, data batch
sizes, ``max_steps``, validation off, FP8 via ``bf16_with_fp8_mixed`` (delayed scaling, the
recipes' default), mock data with the NullTokenizer. ``tests/test_backends.py`` checks every
name the script uses against the signatures extracted from NeMo v2.3.0
(``tests/golden/frameworks/nemo_v2.3.0_api.json``).

Values reach the script as Python literals (``repr``), never as code.
"""

from __future__ import annotations

from llmb.launch.backends.base import (
    FrameworkLaunch,
    Target,
    admit,
    attention_env,
    check_data,
    check_options,
    extras_note,
    nsys_prefix,
    refuse,
    start_checkpoint,
    steps_of,
    trace_env,
)
from llmb.plan.run import ResolvedRun

NAME = "nemo2"
LOG_FORMAT = "nemo2"
IMAGE = "nvcr.io/nvidia/nemo:25.04.01"
SCRIPT = "nemo2_pretrain.py"
VERSION = "NeMo v2.3.0"
CHECKED_AGAINST = (
    "NVIDIA/NeMo nemo/collections/llm/recipes/*.py @ v2.3.0 (2b03b748bb7d)",
    "NVIDIA/NeMo nemo/lightning/pytorch/strategies/megatron_strategy.py @ v2.3.0",
    "NVIDIA/NeMo scripts/performance/utils.py @ v2.3.0",
)

#: (workload, size) -> NeMo 2 recipe module; the catalog's constants are set on its model.
RECIPES = {
    ("llama3.1", "8b"): "llama31_8b",
    ("llama3.1", "70b"): "llama31_70b",
    ("llama3.1", "405b"): "llama31_405b",
    ("llama3.1", "405b-proxy"): "llama31_405b",
    ("megatron-llama3", "8b"): "llama3_8b",
    ("megatron-llama3", "70b"): "llama3_70b",
    ("megatron-llama3", "405b"): "llama31_405b",
    ("llama4-maverick", "400b"): "llama4_e128",
    ("nemotron4", "340b"): "nemotron4_340b",
    ("grok1", "314b"): "mixtral_8x22b",
}
#: Recipes that stand in for a model NeMo has no recipe of: the recipe's model class is the
#: same architecture (Mixtral: a top-2 softmax-routed MoE GPT) and the script sets every
#: constant of the catalog's model on it. NeMo v2.3.0 has no Grok-1 model or recipe; the
#: published NeMo 2 Grok-1 runs (dgxc-benchmarking 25.05) trained such a Mixtral-style GPT.
STAND_INS = {"mixtral_8x22b"}
#: catalog activation -> the Megatron-Core activation_func a stand-in's config is given
_ACTIVATION = {"geglu": "torch.nn.functional.gelu", "swiglu": "torch.nn.functional.silu"}

_RECOMPUTE = {"full": {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1},
              "selective": {"recompute_granularity": "selective"}}


def _module(run: ResolvedRun) -> str:
    return RECIPES[(run.recipe.workload.name, run.recipe.size)]


def supports(run: ResolvedRun) -> str | None:
    key = (run.recipe.workload.name, run.recipe.size)
    if key not in RECIPES:
        return f"{VERSION} has no pretraining recipe for {key[0]} {key[1]} (recipes: see the README's table)"
    return None


def _model_config(run: ResolvedRun) -> dict[str, object]:
    """The model's constants as Megatron-Core ``TransformerConfig`` / NeMo ``GPTConfig`` fields."""
    m = run.model
    cfg: dict[str, object] = {
        "num_layers": m.layers, "hidden_size": m.hidden, "ffn_hidden_size": m.ffn_hidden,
        "num_attention_heads": m.heads, "num_query_groups": m.query_groups, "kv_channels": m.kv_channels,
        "seq_length": m.seq_len, "rotary_base": m.rope_theta, "rotary_percent": m.rotary_percent,
        "layernorm_epsilon": m.norm_eps, "share_embeddings_and_output_weights": m.tied_embeddings,
    }
    if m.moe is not None:
        cfg.update(num_moe_experts=m.moe.num_experts, moe_router_topk=m.moe.top_k,
                   moe_ffn_hidden_size=m.moe.expert_ffn_hidden,
                   moe_shared_expert_intermediate_size=m.moe.shared_expert_ffn_hidden * m.moe.shared_experts or None)
        if m.moe.router_score == "softmax":
            # Megatron-Core: softmax over all logits then top-k (not renormalised), or top-k then
            # softmax (renormalised); MixtralConfig's default is the former
            cfg["moe_router_pre_softmax"] = not m.moe.normalize_top_k
        if m.moe.capacity_factor:
            # token dropping as the published runs train: what the performance scripts'
            # MegatronTokenDropCallback sets (capacity factor, each expert padded to it)
            cfg.update(moe_expert_capacity_factor=m.moe.capacity_factor, moe_pad_expert_input_to_capacity=True)
    row = run.recipe.row
    cfg.update(_RECOMPUTE.get(row.recompute if row is not None else "", {}))
    return cfg


def _activation(run: ResolvedRun, module: str) -> list[str]:
    """A stand-in recipe's activation, set to the catalog's (a function: not a literal)."""
    if module not in STAND_INS:
        return []
    act = run.model.activation
    if act not in _ACTIVATION:
        raise refuse(NAME, f"no Megatron-Core gated activation for {act!r} in the {module} stand-in")
    return [f"recipe.model.config.activation_func = {_ACTIVATION[act]}", "recipe.model.config.gated_linear_unit = True"]


def _strategy(run: ResolvedRun) -> dict[str, object]:
    lay, d = run.layout, run.derived
    return {
        "tensor_model_parallel_size": lay.tp,
        "pipeline_model_parallel_size": lay.pp,
        "context_parallel_size": lay.cp,
        "virtual_pipeline_model_parallel_size": (lay.vp if lay.pp > 1 and (lay.vp or 1) > 1 else None),
        "sequence_parallel": lay.tp > 1,
        "expert_model_parallel_size": lay.ep if d.moe else 1,
        "expert_tensor_parallel_size": d.etp if d.moe else None,
        "account_for_embedding_in_pipeline_split": lay.embedding_in_pipeline_split,
        "account_for_loss_in_pipeline_split": lay.loss_in_pipeline_split,
    }


def _assign(prefix: str, values: dict[str, object]) -> list[str]:
    return [f"{prefix}.{k} = {v!r}" for k, v in values.items()]


def script(run: ResolvedRun, target: Target) -> str:
    """The text of ``nemo2_pretrain.py``."""
    admit(run, NAME, supports(run))
    if run.recipe.dtype == "fp32":
        raise refuse(NAME, "the NeMo 2 recipes train in bf16 or fp8 (bf16_mixed / bf16_with_fp8_mixed); use --dtype bf16")
    if run.layout.fsdp:
        raise refuse(NAME, "an FSDP group size (MaxText's layout) has no NeMo 2 recipe setting; use --backend maxtext")
    check_options(run, NAME)
    data = check_data(run, NAME, indexed_ok=True)
    opts, req, exp, lay = run.options, run.request, target.exp_dir, run.layout
    steps = steps_of(run)
    module = _module(run)
    name = f"{run.recipe.workload.name}_{run.size_label}_{run.recipe.dtype}_{run.world}"
    lines = [
        f"# Written by llmb: NeMo 2 pretraining of {run.title} on {target.nodes} node(s) x {target.ranks_per_node} GPU(s).",
        f"# Names checked against {VERSION} (the NeMo of {IMAGE}). Every rank runs this under torchrun.",
        "import nemo_run as run",
        "import torch",
        "from nemo import lightning as nl",
        f"from nemo.collections.llm.recipes.{module} import pretrain_recipe",
        "from nemo.collections.llm.gpt.data.mock import MockDataModule",
        "from nemo.collections.llm.gpt.data.pre_training import PreTrainingDataModule",
        "from nemo.collections.llm.recipes.precision.mixed_precision import bf16_mixed, bf16_with_fp8_mixed",
        "from nemo.collections.nlp.modules.common.tokenizer_utils import get_nmt_tokenizer",
        "from nemo.lightning.pytorch.callbacks import NsysCallback",
        "from nemo.lightning.pytorch.callbacks.megatron_comm_overlap import MegatronCommOverlapCallback",
        "",
        f"recipe = pretrain_recipe(dir={exp + '/nemo'!r}, name={name!r}, num_nodes={target.nodes}, "
        f"num_gpus_per_node={target.ranks_per_node}, performance_mode=False)",
        "",
        ("# The catalog's model constants (the recipe's own model class, e.g. Llama31Config8B)." if module not in STAND_INS
         else f"# The catalog's model, every constant set on {module}'s model class (a stand-in: NeMo has no such recipe)."),
        *_assign("recipe.model.config", _model_config(run)),
        *_activation(run, module),
        "",
        "# The layout.",
        *_assign("recipe.trainer.strategy", _strategy(run)),
    ]
    if lay.pp > 1:
        lines.append("recipe.trainer.strategy.pipeline_dtype = torch.bfloat16")
    if lay.tp > 1 and run.recipe.tp_comm_overlap:
        # the recipes' performance optimisation this script keeps: TE userbuffers overlap of the
        # TP collectives (TE's default userbuffer settings, not the performance scripts' per-shape ones)
        lines += ["# TP communication overlapped with the GEMMs, as the published runs' recipe does.",
                  "recipe.trainer.callbacks.append(run.Config(MegatronCommOverlapCallback, tp_comm_overlap=True))"]
    tokenizer = (f"run.Config(get_nmt_tokenizer, library='null', model_name='NullTokenizer', "
                 f"vocab_size={run.model.vocab})")
    if data:
        lines.append(f"recipe.data = run.Config(PreTrainingDataModule, paths=[{data!r}], seq_length={run.model.seq_len}, "
                     f"micro_batch_size={lay.mbs}, global_batch_size={lay.gbs}, tokenizer={tokenizer}, "
                     f"split='100,0,0', seed={req.seed})")
    else:
        lines.append(f"recipe.data = run.Config(MockDataModule, seq_length={run.model.seq_len}, "
                     f"micro_batch_size={lay.mbs}, global_batch_size={lay.gbs}, tokenizer={tokenizer}, "
                     f"num_train_samples={steps * lay.gbs})")
    lines += [
        "",
        "# 50 steps (the recipes' count), a log line every step, no validation.",
        f"recipe.trainer.max_steps = {steps}",
        "recipe.trainer.log_every_n_steps = 1",
        f"recipe.trainer.val_check_interval = {steps}",
        "recipe.trainer.limit_val_batches = 0",
        f"recipe.trainer.plugins = {'bf16_with_fp8_mixed()' if run.recipe.dtype == 'fp8' else 'bf16_mixed()'}",
        f"recipe.optim.config.lr = {req.lr!r}",
        f"recipe.optim.config.weight_decay = {req.weight_decay!r}",
        f"recipe.optim.config.clip_grad = {req.grad_clip!r}",
        f"recipe.optim.lr_scheduler.warmup_steps = {min(run.lr_warmup_steps, steps - 1)}",
        f"recipe.optim.lr_scheduler.min_lr = {float(f'{req.lr * req.min_lr_ratio:.6g}')!r}",
    ]
    if opts.save_at_end:
        lines += ["recipe.trainer.enable_checkpointing = True",
                  f"recipe.log.ckpt.every_n_train_steps = {steps}",
                  "recipe.log.ckpt.save_last = True"]
    else:
        lines += ["recipe.trainer.enable_checkpointing = False", "recipe.log.ckpt = None"]
    load = start_checkpoint(run)
    if load:
        lines.append(f"recipe.resume = run.Config(nl.AutoResume, resume_from_path={load!r}, resume_if_exists=True)")
    if opts.profile:
        ranks = list(range(run.world)) if opts.profile_ranks == () else [0]
        lines.append(f"recipe.trainer.callbacks.append(run.Config(NsysCallback, start_step={opts.profile_start_step}, "
                     f"end_step={opts.profile_stop_step}, ranks={ranks!r}, gen_shape=False))")
    lines += ["", "if __name__ == '__main__':", "    run.run(recipe, direct=True)", ""]
    return "\n".join(lines)


def render(run: ResolvedRun, target: Target) -> FrameworkLaunch:
    text = script(run, target)
    notes = extras_note(run, NAME)
    module = _module(run)
    if module in STAND_INS:
        notes += (f"{VERSION} has no {run.recipe.workload.name} recipe: the script sets the catalog's model on "
                  f"{module}'s pretrain_recipe (the same architecture); the published runs' own NeMo 2 script is "
                  "not public",)
    path = f"{target.exp_dir}/{SCRIPT}"
    return FrameworkLaunch(
        backend=NAME, log_format=LOG_FORMAT, launcher="torchrun", command=(path,), files={SCRIPT: text},
        env={"CUDA_DEVICE_MAX_CONNECTIONS": "1", **attention_env(run), **trace_env(run)}, image=IMAGE, workdir=target.exp_dir,
        wrapper=tuple(nsys_prefix(target.exp_dir)) if run.options.profile else (), checked_against=CHECKED_AGAINST,
        notes=notes,
    )
