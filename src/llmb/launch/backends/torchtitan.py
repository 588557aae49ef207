"""torchtitan: a TOML job config and ``torchrun -m torchtitan.train --job.config_file ...``.

Sections and fields are those of ``torchtitan/config/job_config.py`` in torchtitan ``v0.2.2``
(the version on PyPI that llmb's tests install): ``tests/test_backends.py`` loads every
generated TOML with torchtitan's own ``ConfigManager``, which refuses unknown fields. The layout
is torchtitan's degrees: ``data_parallel_shard_degree`` (FSDP; the catalog's FSDP group, with
``data_parallel_replicate_degree`` replicas on top, HSDP), ``tensor_parallel_degree`` (with
sequence parallelism, torchtitan's only TP), ``context_parallel_degree``,
``pipeline_parallel_degree`` with ``Interleaved1F1B`` over ``VP`` stages per rank, and
``local_batch_size`` = MBS (torchtitan accumulates gradients up to ``global_batch_size``; with PP
the local batch is MBS x GA, cut into MBS-sized pipeline microbatches).

torchtitan's model flavors are fixed in code; the catalog's model reaches it through llmb's
plugin (``llmb/launch/backends/files/llmb_titan.py.txt``, copied into the experiment folder as
``llmb_titan.py`` and imported by ``experimental.custom_import``), which also supplies mock data.
"""

from __future__ import annotations

import json
from importlib import resources

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

NAME = "torchtitan"
LOG_FORMAT = "torchtitan"
IMAGE = None  # no published recipe container: set backends.torchtitan.image, or --no-container
VERSION = "torchtitan v0.2.2"
CONFIG = "torchtitan.toml"
PLUGIN = "llmb_titan.py"
MODEL = "llmb_titan_model.json"
CHECKED_AGAINST = ("pytorch/torchtitan torchtitan/config/job_config.py @ v0.2.2 (loaded by its ConfigManager)",
                   "pytorch/torchtitan torchtitan/models/llama3/__init__.py @ v0.2.2")
_AC = {"full": "full", "selective": "selective", "none": "none"}


def supports(run: ResolvedRun) -> str | None:
    m = run.model
    if m.moe is not None or m.nope_layer_interval is not None:
        return "llmb's torchtitan backend builds torchtitan's dense Llama 3 model; Llama 4 MoE is not expressed"
    if m.family != "llama" or m.activation != "swiglu" or m.norm != "rmsnorm" or m.rotary_percent != 1.0:
        return (f"torchtitan's Llama 3 model has RMSNorm, SwiGLU and full RoPE; {run.recipe.workload.name} has "
                f"{m.norm}, {m.activation}, rotary_percent {m.rotary_percent:g}")
    if m.kv_channels * m.heads != m.hidden:
        return "torchtitan's Llama 3 model derives head_dim as hidden / heads"
    return None


def model_args(run: ResolvedRun) -> dict[str, object]:
    """torchtitan ``TransformerModelArgs`` fields giving exactly the catalog's model. The FFN
    width: torchtitan takes int(8 * dim / 3), times ``ffn_dim_multiplier``, rounded up to
    ``multiple_of``; with ``multiple_of`` = the catalog's width that rounds to it exactly."""
    m = run.model
    base = int(2 * (4 * m.hidden) / 3)
    rs = m.rope_scaling
    rope = ({"scaling_factor": rs.factor, "low_freq_factor": rs.low_freq_factor, "high_freq_factor": rs.high_freq_factor,
             "original_max_position_embeddings": rs.original_context} if rs is not None
            else {"scaling_factor": 1.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": m.seq_len})  # factor 1: no scaling
    return {
        "dim": m.hidden, "n_layers": m.layers, "n_heads": m.heads, "n_kv_heads": m.query_groups,
        "vocab_size": m.vocab, "multiple_of": m.ffn_hidden, "ffn_dim_multiplier": m.ffn_hidden / base,
        "norm_eps": m.norm_eps, "rope_theta": m.rope_theta, "max_seq_len": m.seq_len, "rope_scaling": rope,
        "seed": run.request.seed,
    }


def job_config(run: ResolvedRun, target: Target) -> dict[str, dict[str, object]]:
    admit(run, NAME, supports(run))
    no_moe(run, NAME, "not expressed")
    check_options(run, NAME)
    check_data(run, NAME, indexed_ok=False)
    lay, d, req, opts, exp = run.layout, run.derived, run.request, run.options, target.exp_dir
    steps = steps_of(run)
    shard = lay.fsdp or d.dp
    if d.dp % shard:
        raise refuse(NAME, f"FSDP group {shard} does not divide the {d.dp} data-parallel ranks")
    vp = lay.vp or 1
    row = run.recipe.row
    dtype = run.recipe.dtype
    cfg: dict[str, dict[str, object]] = {
        "job": {"dump_folder": f"{exp}/torchtitan", "description": run.title},
        "profiling": {"enable_profiling": False},
        "metrics": {"log_freq": 1, "enable_tensorboard": True, "save_tb_folder": "tb", "disable_color_printing": True},
        "model": {"name": "llmb_llama3", "flavor": "llmb"},
        "optimizer": {"name": "AdamW", "lr": req.lr, "weight_decay": req.weight_decay,
                      "implementation": "foreach" if target.device == "cpu" else "fused"},
        "lr_scheduler": {"warmup_steps": min(run.lr_warmup_steps, steps - 1), "decay_type": "cosine",
                         "min_lr_factor": req.min_lr_ratio},
        # With PP, torchtitan's pipeline microbatches are its local batch split by
        # pipeline_parallel_microbatch_size: the GA micro-batches of Megatron's schedule go
        # into one local batch. Without PP, it accumulates local batches up to the global one.
        "training": {"local_batch_size": lay.mbs * d.ga if lay.pp > 1 else lay.mbs, "global_batch_size": lay.gbs,
                     "seq_len": run.model.seq_len,
                     "steps": steps, "max_norm": req.grad_clip, "dataset": "llmb_mock",
                     "mixed_precision_param": "float32" if dtype == "fp32" else "bfloat16"},
        "parallelism": {
            "data_parallel_replicate_degree": d.dp // shard, "data_parallel_shard_degree": shard,
            "tensor_parallel_degree": lay.tp, "context_parallel_degree": lay.cp,
            "pipeline_parallel_degree": lay.pp,
            "pipeline_parallel_schedule": "Interleaved1F1B" if lay.pp > 1 and vp > 1 else "1F1B",
            "pipeline_parallel_microbatch_size": lay.mbs,
        },
        "checkpoint": {"enable": bool(opts.save_at_end or opts.load), "folder": "checkpoint", "interval": steps,
                       "last_save_model_only": False},
        "activation_checkpoint": {"mode": _AC.get(row.recompute if row is not None and row.recompute else "none",
                                                  "selective")},
        "experimental": {"custom_import": PLUGIN.removesuffix(".py")},
        "debug": {"seed": req.seed % 2**31},
        "comm": {"init_timeout_seconds": int(opts.pg_timeout_s), "train_timeout_seconds": int(opts.pg_timeout_s)},
    }
    if lay.pp > 1:
        # torchtitan cuts ceil((layers + first_less + last_less) / layers_per_stage) stages
        # (distributed/pipeline_parallel.py); "less layers" count the embedding and the output
        # as layers of the first and last stage, Megatron's embedding/loss accounting. They
        # default to 1 each: llmb always sets them, to 1 for the 405B rows, else 0.
        first, last = int(lay.embedding_in_pipeline_split), int(lay.loss_in_pipeline_split)
        cfg["parallelism"].update({
            "pipeline_parallel_first_stage_less_layers": first,
            "pipeline_parallel_last_stage_less_layers": last,
            "pipeline_parallel_layers_per_stage": (run.model.layers + first + last) // (lay.pp * vp),
        })
    if not opts.save_at_end and opts.load:
        cfg["checkpoint"]["interval"] = steps + 1
    load = start_checkpoint(run)
    if load:
        cfg["checkpoint"].update({"initial_load_path": load, "initial_load_model_only": False})
    if dtype == "fp8":
        cfg["model"]["converters"] = ["quantize.linear.float8"]
        cfg["quantize.linear.float8"] = {"enable_fsdp_float8_all_gather": True,
                                         "precompute_float8_dynamic_scale_for_fsdp": True,
                                         "filter_fqns": ["output"]}
    if opts.profile:
        # torchtitan traces `profiler_active` steps ending at every multiple of profile_freq.
        cfg["profiling"] = {"enable_profiling": True, "save_traces_folder": "profile_traces",
                            "profile_freq": opts.profile_stop_step, "profiler_warmup": 0,
                            "profiler_active": opts.profile_stop_step - opts.profile_start_step + 1}
    return cfg


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


def to_toml(cfg: dict[str, dict[str, object]], header: str = "") -> str:
    lines = [f"# {line}" for line in header.splitlines()]
    for section, values in cfg.items():
        lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def plugin_source() -> str:
    return resources.files("llmb.launch.backends").joinpath("files", "llmb_titan.py.txt").read_text(encoding="utf-8")


def render(run: ResolvedRun, target: Target) -> FrameworkLaunch:
    cfg = job_config(run, target)
    toml = to_toml(cfg, f"Written by llmb: {run.title} on {target.nodes} node(s) x {target.ranks_per_node} rank(s).\n"
                        f"Fields of {VERSION} torchtitan/config/job_config.py.")
    env = {"PYTHONPATH": target.exp_dir, **trace_env(run)}
    if target.device == "cpu":
        env["LLMB_TITAN_DEVICE"] = "cpu"
    return FrameworkLaunch(
        backend=NAME, log_format=LOG_FORMAT, launcher="torchrun",
        command=("-m", "torchtitan.train", "--job.config_file", f"{target.exp_dir}/{CONFIG}"),
        files={CONFIG: toml, PLUGIN: plugin_source(), MODEL: json.dumps(model_args(run), indent=2) + "\n"},
        env=env, image=IMAGE, workdir=target.exp_dir, checked_against=CHECKED_AGAINST,
    )
