"""The framework backends (llmb.launch.backends), checked against the frameworks' own code.

For every layout row of the catalog, in every dtype it publishes, each backend's launch is

* compared with its golden file (``tests/golden/backends/<backend>/<workload>_<size>.txt``;
  ``LLMB_REGEN_GOLDEN=1`` rewrites them): a flag that drifts fails here;
* checked against the framework's option names, extracted from its source by
  ``scripts/extract-framework-options.py`` into ``tests/golden/frameworks/``:
  Megatron-LM ``megatron/training/arguments.py`` @ core_r0.12.0 (5cb6dbb3ed04),
  MaxText ``MaxText/configs/base.yml`` @ 0fe43b75a285 (2024-12-09),
  NeMo ``examples/nlp/language_modeling/conf/megatron_gpt_config.yaml`` @ v2.0.0 (e938df327c6d),
  NeMo 2 recipes, classes and performance scripts @ v2.3.0 (2b03b748bb7d);
* accepted by the framework's own code where it installs here: torchtitan 0.2.2's
  ``ConfigManager`` loads every generated TOML; megatron-core's ``TransformerConfig`` (the
  installed megatron-core 0.16.1, a newer release than core_r0.12.0) accepts every Megatron-LM
  and NeMo 2 layout.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
from pathlib import Path

import pytest

from llmb.catalog import default_catalog
from llmb.errors import LlmbError
from llmb.launch import backends
from llmb.launch.backends import Target
from llmb.plan.request import RunRequest
from llmb.plan.run import resolve_run

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden" / "backends"
FRAMEWORKS = HERE / "golden" / "frameworks"
EXP = "/experiments/EXP"
GPUS_PER_NODE = {"h100": 8, "gb200": 4}
REGEN = os.environ.get("LLMB_REGEN_GOLDEN") == "1"


def _rows():
    cat = default_catalog()
    for wl in cat.workloads.values():
        for size, spec in wl.sizes.items():
            for row in spec.layouts:
                for dtype in row.dtypes:
                    yield wl.name, size, dtype, row.gpus, row.gpu_type


ROWS = list(_rows())


def _release_rows():
    """(row, release) for every layout row bound to releases other than the newest at its
    scale, which ROWS (resolved without --release) does not reach: e.g. Grok-1's NeMo 1 row
    at 512 GPUs, next to its NeMo 2 row."""
    cat = default_catalog()
    for wl in cat.workloads.values():
        for size, spec in wl.sizes.items():
            for row in spec.layouts:
                for release in row.releases:
                    for dtype in row.dtypes:
                        yield (wl.name, size, dtype, row.gpus, row.gpu_type), release


RELEASE_ROWS = sorted(set(_release_rows()))


def _resolve(workload, size, dtype, gpus, gpu_type, release=None):
    req = RunRequest(workload=workload, size=size, dtype=dtype, proxy=None, gpus=gpus, gpu_type=gpu_type,
                     release=release)
    return resolve_run(req, check_files=False)


def _target(gpus, gpu_type):
    per = GPUS_PER_NODE[gpu_type]
    return Target(exp_dir=EXP, nodes=max(1, gpus // per), ranks_per_node=min(per, gpus))


def _render(backend, row):
    run = _resolve(*row)
    return run, backends.render(backend, run, _target(row[3], row[4]))


def _launches(backend):
    """(row, run, launch) for every row the backend can express."""
    out = []
    for row in ROWS:
        try:
            run, launch = _render(backend, row)
        except LlmbError:
            continue
        out.append((row, run, launch))
    return out


def _framework(name):
    return json.loads((FRAMEWORKS / name).read_text(encoding="utf-8"))


# --- golden files -------------------------------------------------------------------------

def _golden_text(backend, workload, size):
    parts = [f"# llmb --backend {backend}: {workload} {size}, every catalog layout row (tests/test_backends.py)"]
    for row in ROWS:
        if row[:2] != (workload, size):
            continue
        parts.append(f"\n### {row[3]} x {row[4]} {row[2]}")
        try:
            _, launch = _render(backend, row)
        except LlmbError as exc:
            parts.append(f"REFUSED: {exc}")
            continue
        parts.append(f"launcher: {launch.launcher}\nimage: {launch.image}\nworkdir: {launch.workdir}")
        parts += [f"env: {k}={v}" for k, v in sorted(launch.env.items())]
        if launch.wrapper:
            parts.append("wrapper: " + shlex.join(launch.wrapper))
        parts.append("command:\n" + "\n".join("  " + shlex.quote(a) for a in launch.command))
        for name, text in sorted(launch.files.items()):
            if name.endswith(".py") and backend == "torchtitan":
                continue  # the plugin: the same file for every row
            parts.append(f"--- {name}\n{text.rstrip()}")
    return "\n".join(parts) + "\n"


GOLDEN_CASES = sorted({(b, r[0], r[1]) for b in backends.MODULES for r in ROWS})


@pytest.mark.parametrize("backend, workload, size", GOLDEN_CASES, ids=[f"{b}-{w}-{s}" for b, w, s in GOLDEN_CASES])
def test_launch_matches_its_golden_file(backend, workload, size):
    path = GOLDEN / backend / f"{workload}_{size}.txt"
    text = _golden_text(backend, workload, size)
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}: run LLMB_REGEN_GOLDEN=1 pytest tests/test_backends.py"
    assert text == path.read_text(encoding="utf-8"), (
        f"{backend} launch of {workload} {size} drifted from {path} (LLMB_REGEN_GOLDEN=1 rewrites it after review)")


def test_every_catalog_row_has_a_recipe_launch():
    """The issue's "done when": every row's --backend recipe renders, with the framework of
    the row's published baseline (Grok-1's NeMo 1 releases and its NeMo 2 releases)."""
    seen: dict[str, set[str]] = {}
    for row in ROWS:
        run = _resolve(*row)
        name = backends.backend_name("recipe", run.recipe.framework)
        launch = backends.render(name, run, _target(row[3], row[4]))
        assert launch.backend == name and launch.command
        seen.setdefault(row[0], set()).add(name)
    assert seen == {"llama2-maxtext": {"maxtext"}, "llama3.1": {"nemo2"}, "llama4-maverick": {"nemo2"},
                    "megatron-llama3": {"megatron"}, "nemotron4": {"nemo1", "nemo2"}, "grok1": {"nemo1", "nemo2"}}


@pytest.mark.parametrize("row, release", RELEASE_ROWS, ids=[f"{r}-{rel}" for r, rel in RELEASE_ROWS])
def test_every_release_bound_row_has_its_releases_launch(row, release):
    """Rows of one scale published by several releases (Grok-1 at 512 GPUs: NeMo 1 in 24.11.1
    and 25.02, NeMo 2 in 25.05.x) each render with ``--release``, in their own framework and
    with their own layout."""
    run = _resolve(*row, release=release)
    assert run.recipe.release == release
    wl = run.recipe.workload
    want = {wl.framework_of(s) for s, src in wl.sources.items() if src.release == release}
    assert run.recipe.framework in want
    name = backends.backend_name("recipe", run.recipe.framework)
    launch = backends.render(name, run, _target(row[3], row[4]))
    layout_row = run.recipe.row
    assert layout_row is not None and release in layout_row.releases
    text = " ".join(launch.command) + "".join(launch.files.values())
    assert str(layout_row.tp) in text and launch.backend == name


# --- Megatron-LM --------------------------------------------------------------------------

MEGATRON = _framework("megatron-lm_core_r0.12.0.json")


def _flags(command):
    """(flag, value or None) pairs of a Megatron-LM argv (after the script)."""
    out, args, i = [], list(command[1:]), 0
    while i < len(args):
        flag = args[i]
        assert flag.startswith("--"), f"stray value {flag!r}"
        spec = MEGATRON["flags"].get(flag)
        assert spec is not None, f"{flag} is not an option of Megatron-LM {MEGATRON['ref']} arguments.py"
        if spec["takes_value"]:
            value = args[i + 1]
            assert not value.startswith("--"), f"{flag} needs a value"
            if spec["choices"] is not None:
                assert value in spec["choices"], f"{flag} {value}: not one of {spec['choices']}"
            out.append((flag, value))
            i += 2
        else:
            out.append((flag, None))
            i += 1
    return out


MEGATRON_LAUNCHES = _launches("megatron")


@pytest.mark.parametrize("row, run, launch", MEGATRON_LAUNCHES, ids=[str(r) for r, _, _ in MEGATRON_LAUNCHES])
def test_megatron_flags_are_megatrons(row, run, launch):
    assert launch.command[0].endswith("/pretrain_gpt.py")
    flags = dict(_flags(launch.command))
    lay = run.layout
    assert flags["--tensor-model-parallel-size"] == str(lay.tp)
    assert flags["--pipeline-model-parallel-size"] == str(lay.pp)
    assert flags["--global-batch-size"] == str(lay.gbs) and flags["--micro-batch-size"] == str(lay.mbs)
    assert flags["--num-layers"] == str(run.model.layers) and flags["--vocab-size"] == str(run.model.vocab)
    assert flags["--train-iters"] == "50" and flags["--log-interval"] == "1" and "--mock-data" in flags
    if run.recipe.dtype == "fp8":  # as in examples/llama/train_llama3_8b_h100_fp8.sh
        assert (flags["--fp8-format"], flags["--fp8-amax-history-len"], flags["--fp8-amax-compute-algo"]) == \
            ("hybrid", "1024", "max")
    # TP comm overlap wherever there is TP to overlap (every catalog row keeps it on); Megatron-LM's
    # validate_args refuses --tp-comm-overlap without --sequence-parallel
    assert ("--tp-comm-overlap" in flags) == (lay.tp > 1)
    assert "--tp-comm-overlap" not in flags or "--sequence-parallel" in flags


def test_the_megatron_refusals_are_true_of_its_source():
    """What llmb says core_r0.12.0 cannot do, its flag list confirms."""
    for flag in ("--no-rope-freq", "--moe-apply-probs-on-input"):
        assert flag not in MEGATRON["flags"]
    for flag in ("--num-layers-per-virtual-pipeline-stage", "--num-virtual-stages-per-pipeline-rank",
                 "--account-for-embedding-in-pipeline-split", "--account-for-loss-in-pipeline-split",
                 "--use-torch-fsdp2", "--use-rope-scaling"):
        assert flag in MEGATRON["flags"]


def _mcore_config(**kw):
    torch = pytest.importorskip("torch")
    pytest.importorskip("megatron.core")
    from megatron.core.transformer import TransformerConfig

    if kw.get("pipeline_model_parallel_size", 1) > 1:
        kw["pipeline_dtype"] = torch.bfloat16
    return TransformerConfig(**kw)


def _megatron_to_mcore(run, flags):
    import torch.nn.functional as F

    f = dict(flags)
    pp = int(f["--pipeline-model-parallel-size"])
    layers = int(f["--num-layers"])
    vp = None
    if "--num-virtual-stages-per-pipeline-rank" in f:
        vp = int(f["--num-virtual-stages-per-pipeline-rank"])
    elif "--num-layers-per-virtual-pipeline-stage" in f:
        vp = layers // (pp * int(f["--num-layers-per-virtual-pipeline-stage"]))
    kw = dict(
        num_layers=layers, hidden_size=int(f["--hidden-size"]), ffn_hidden_size=int(f["--ffn-hidden-size"]),
        num_attention_heads=int(f["--num-attention-heads"]), kv_channels=int(f["--kv-channels"]),
        num_query_groups=int(f.get("--num-query-groups", f["--num-attention-heads"])),
        tensor_model_parallel_size=int(f["--tensor-model-parallel-size"]), pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=vp, context_parallel_size=int(f["--context-parallel-size"]),
        sequence_parallel="--sequence-parallel" in f, normalization=f["--normalization"],
        layernorm_zero_centered_gamma="--apply-layernorm-1p" in f, gated_linear_unit="--swiglu" in f,
        activation_func=F.silu if "--swiglu" in f else F.gelu, add_bias_linear=False,
        account_for_embedding_in_pipeline_split="--account-for-embedding-in-pipeline-split" in f,
        account_for_loss_in_pipeline_split="--account-for-loss-in-pipeline-split" in f,
        bf16="--bf16" in f,
    )
    if "--fp8-format" in f:
        kw.update(fp8=f["--fp8-format"], fp8_amax_history_len=int(f["--fp8-amax-history-len"]),
                  fp8_amax_compute_algo=f["--fp8-amax-compute-algo"])
    return kw


@pytest.mark.parametrize("row, run, launch", MEGATRON_LAUNCHES, ids=[str(r) for r, _, _ in MEGATRON_LAUNCHES])
def test_megatron_core_accepts_the_megatron_layout(row, run, launch):
    pytest.importorskip("megatron.core")
    cfg = _mcore_config(**_megatron_to_mcore(run, _flags(launch.command)))
    assert cfg.num_layers == run.model.layers and cfg.tensor_model_parallel_size == run.layout.tp


# --- NeMo 2 -------------------------------------------------------------------------------

NEMO2 = _framework("nemo_v2.3.0_api.json")
NEMO2_LAUNCHES = _launches("nemo2")


def _assignments(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                parts = []
                while isinstance(t, ast.Attribute):
                    parts.append(t.attr)
                    t = t.value
                if isinstance(t, ast.Name) and t.id == "recipe" and parts:
                    yield ".".join(reversed(parts)), node.value


def _config_calls(tree):
    """(class name, keyword names) of every run.Config(Cls, ...) in the script."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Config"
                and node.args):
            cls = node.args[0]
            name = cls.attr if isinstance(cls, ast.Attribute) else cls.id
            yield name, [k.arg for k in node.keywords]


@pytest.mark.parametrize("row, run, launch", NEMO2_LAUNCHES, ids=[str(r) for r, _, _ in NEMO2_LAUNCHES])
def test_nemo2_script_uses_only_nemos_names(row, run, launch):
    text = launch.files["nemo2_pretrain.py"]
    tree = ast.parse(text)
    mcore = set(MEGATRON["transformer_config_fields"]) | set(NEMO2["gpt_config_fields"])
    params = NEMO2["init_params"]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module.startswith("nemo"):
            for alias in node.names:
                if node.module.startswith("nemo.collections.llm.recipes.") and node.module.count(".") == 4:
                    assert node.module.rsplit(".", 1)[1] in NEMO2["recipes"], node.module
                    assert alias.name == "pretrain_recipe"
                elif node.module == "nemo":
                    assert alias.name == "lightning"
                else:
                    assert alias.name in NEMO2["module_names"][node.module], (node.module, alias.name)
    for path, _ in _assignments(tree):
        head, _, attr = path.rpartition(".")
        if head == "trainer.strategy":
            assert attr in params["MegatronStrategy"], path
        elif head == "model.config":
            assert attr in mcore, path
        elif head == "optim.config":
            assert attr in MEGATRON["optimizer_config_fields"], path
        elif head == "optim.lr_scheduler":
            assert attr in params["CosineAnnealingScheduler"], path
        elif head == "log.ckpt":
            assert attr in params["ModelCheckpoint"], path
        else:
            assert path in NEMO2["recipe_paths_assigned"] or path == "resume", \
                f"recipe.{path}: NeMo v2.3.0's recipes and performance scripts never set it"
    calls = list(_config_calls(tree))
    for cls, kws in calls:
        if cls in params:
            assert set(kws) <= set(params[cls]), (cls, set(kws) - set(params[cls]))
    # TP comm overlap (the recipes' MegatronCommOverlapCallback) wherever there is TP to overlap
    assert (("MegatronCommOverlapCallback", ["tp_comm_overlap"]) in calls) == (run.layout.tp > 1)
    recipe = re.search(r"recipes\.(\w+) import pretrain_recipe", text).group(1)
    call = re.search(r"pretrain_recipe\((.*)\)", text).group(1)
    for kw in re.findall(r"(\w+)=", call):
        assert kw in NEMO2["recipes"][recipe], (recipe, kw)


@pytest.mark.parametrize("row, run, launch", NEMO2_LAUNCHES, ids=[str(r) for r, _, _ in NEMO2_LAUNCHES])
def test_megatron_core_accepts_the_nemo2_layout(row, run, launch):
    pytest.importorskip("megatron.core")
    values = {path: ast.literal_eval(v) for path, v in _assignments(ast.parse(launch.files["nemo2_pretrain.py"]))
              if path.startswith(("model.config.", "trainer.strategy.")) and not isinstance(v, ast.Attribute)}
    model = {k.rsplit(".", 1)[1]: v for k, v in values.items() if k.startswith("model.config.")}
    strat = {k.rsplit(".", 1)[1]: v for k, v in values.items() if k.startswith("trainer.strategy.")}
    import dataclasses

    from megatron.core.transformer import TransformerConfig

    mcore = {f.name for f in dataclasses.fields(TransformerConfig)}
    nemo_only = {k for k in model if k not in mcore}  # NeMo GPTConfig's own fields (seq_length, rotary_base, ...)
    assert nemo_only <= set(NEMO2["gpt_config_fields"]), nemo_only
    model = {k: v for k, v in model.items() if k in mcore}
    model["add_bias_linear"] = False  # NeMo's Llama and Nemotron configs: no linear biases
    recipe = re.search(r"recipes\.(\w+) import", launch.files["nemo2_pretrain.py"]).group(1)
    if recipe == "llama4_e128":
        # What the script keeps of the recipe's own Llama4Experts128Config
        # (nemo/collections/llm/gpt/model/llama.py @ v2.3.0); its MoE layer pattern must be the catalog's.
        freq = [0, 1] * 24
        assert [int(run.model.is_moe_layer(i)) for i in range(run.model.layers)] == freq
        model.update(moe_layer_freq=freq, moe_router_score_function="sigmoid", moe_router_pre_softmax=False,
                     moe_token_dispatcher_type="alltoall", moe_apply_probs_on_input=True)
    elif recipe == "mixtral_8x22b":
        # What the script keeps of MixtralConfig (nemo/collections/llm/gpt/model/mixtral.py @ v2.3.0):
        # every layer MoE, all-to-all dispatch, the aux loss; its own router setting is overridden.
        assert all(map(run.model.is_moe_layer, range(run.model.layers)))
        defaults = NEMO2["model_class_defaults"]["MixtralConfig8x22B"]
        model.update({k: defaults[k] for k in ("moe_token_dispatcher_type", "moe_aux_loss_coeff",
                                              "moe_router_load_balancing_type")})
        assert model["moe_router_pre_softmax"] is (not run.model.moe.normalize_top_k) and model["gated_linear_unit"]
    else:
        assert run.model.moe is None, recipe
    cfg = _mcore_config(**model, bf16=True, **{k: v for k, v in strat.items() if v is not None})
    assert cfg.pipeline_model_parallel_size == run.layout.pp and cfg.context_parallel_size == run.layout.cp


# --- NeMo 1 -------------------------------------------------------------------------------

NEMO1 = _framework("nemo_v2.0.0_megatron_gpt_config.json")
NEMO1_LAUNCHES = _launches("nemo1")


@pytest.mark.parametrize("row, run, launch", NEMO1_LAUNCHES, ids=[str(r) for r, _, _ in NEMO1_LAUNCHES])
def test_nemo1_overrides_name_its_config_keys(row, run, launch):
    assert NEMO1_LAUNCHES, "nemotron4 must be expressible"
    overrides = launch.command[3:]
    keys = NEMO1["keys"]
    for o in overrides:
        key, sep, _ = o.partition("=")
        assert sep, o
        if key.startswith("+"):
            assert key[1:] not in keys, f"{key}: Hydra refuses to append a key the config has"
        else:
            assert key in keys, f"{key} is not a key of megatron_gpt_config.yaml @ {NEMO1['ref']} (needs +)"
    got = dict(o.lstrip("+").split("=", 1) for o in overrides)
    assert got["model.tensor_model_parallel_size"] == str(run.layout.tp)
    vp = run.layout.vp if run.layout.pp > 1 and (run.layout.vp or 1) > 1 else None
    assert got["model.virtual_pipeline_model_parallel_size"] == ("null" if vp is None else str(vp))
    if run.recipe.workload.name == "nemotron4":
        assert got["model.activation"] == "squared-relu" and got["model.normalization"] == "layernorm1p"
    assert got["model.fp8"] == ("true" if run.recipe.dtype == "fp8" else "false")
    # both recipes' configure.sh: ub_tp_comm_overlap, sequence_parallel and fp8_params on; the
    # interleaved schedule's p2p overlapped and unbatched
    tp = run.layout.tp
    assert (got["model.ub_tp_comm_overlap"], got["model.sequence_parallel"]) == (("true", "true") if tp > 1
                                                                                 else ("false", "false"))
    assert got.get("model.fp8_params") == ("true" if run.recipe.dtype == "fp8" else None)
    if vp is not None:
        assert (got["model.overlap_p2p_comm"], got["model.batch_p2p_comm"]) == ("true", "false")
    if run.model.moe is not None:
        # NeMo 1 hands every model key named like a Megatron-Core TransformerConfig field to
        # that field (megatron_base_model.py build_transformer_config @ v2.0.0): the appended
        # MoE keys must be such fields. Grok-1's published recipe (dgxc-benchmarking
        # grok1/grok1_314b.yaml) sets these same keys and values.
        moe = {k[len("+model."):] for k in (o.partition("=")[0] for o in overrides) if k.startswith("+model.moe_")}
        assert moe and moe <= set(MEGATRON["transformer_config_fields"]), moe - set(MEGATRON["transformer_config_fields"])
        assert got["model.num_moe_experts"] == str(run.model.moe.num_experts)
        assert got["model.moe_router_topk"] == str(run.model.moe.top_k)
        assert got["model.expert_model_parallel_size"] == str(run.layout.ep)
        assert got["model.activation"] == "fast-geglu" and got["model.normalization"] == "rmsnorm"


@pytest.mark.parametrize("row, run, launch", [t for t in NEMO1_LAUNCHES if t[1].model.moe is not None],
                         ids=[str(t[0]) for t in NEMO1_LAUNCHES if t[1].model.moe is not None])
def test_megatron_core_accepts_the_nemo1_moe_model(row, run, launch):
    """What NeMo 1 builds from the overrides (megatron_base_model.py build_transformer_config @
    v2.0.0: ``activation`` -> gated + F.gelu for fast-geglu, every other TransformerConfig field
    by name) is a config megatron-core accepts, with the catalog's experts and layout."""
    import torch.nn.functional as F

    got = dict(o.lstrip("+").split("=", 1) for o in launch.command[3:])
    model = {k.split(".", 1)[1]: v for k, v in got.items() if k.startswith("model.")}
    as_bool = {"true": True, "false": False}
    vp = model["virtual_pipeline_model_parallel_size"]
    cfg = _mcore_config(
        num_layers=int(model["num_layers"]), hidden_size=int(model["hidden_size"]),
        ffn_hidden_size=int(model["ffn_hidden_size"]), num_attention_heads=int(model["num_attention_heads"]),
        num_query_groups=int(model["num_query_groups"]), kv_channels=int(model["kv_channels"]),
        gated_linear_unit=model["activation"].endswith("glu"), activation_func=F.gelu, add_bias_linear=False,
        normalization="RMSNorm", bf16=True,
        tensor_model_parallel_size=int(model["tensor_model_parallel_size"]),
        pipeline_model_parallel_size=int(model["pipeline_model_parallel_size"]),
        virtual_pipeline_model_parallel_size=None if vp == "null" else int(vp),
        context_parallel_size=int(model.get("context_parallel_size", 1)),
        expert_model_parallel_size=int(model["expert_model_parallel_size"]),
        sequence_parallel=as_bool[model["sequence_parallel"]],
        num_moe_experts=int(model["num_moe_experts"]), moe_router_topk=int(model["moe_router_topk"]),
        moe_token_dispatcher_type=model["moe_token_dispatcher_type"],
        moe_grouped_gemm=as_bool[model["moe_grouped_gemm"]],
        moe_pad_expert_input_to_capacity=as_bool[model["moe_pad_expert_input_to_capacity"]],
        moe_expert_capacity_factor=float(model["moe_expert_capacity_factor"]),
        moe_aux_loss_coeff=float(model["moe_aux_loss_coeff"]))
    m = run.model
    assert (cfg.num_moe_experts, cfg.moe_router_topk, cfg.num_layers, cfg.ffn_hidden_size) == \
        (m.moe.num_experts, m.moe.top_k, m.layers, m.moe.expert_ffn_hidden)
    assert cfg.expert_model_parallel_size == run.layout.ep and cfg.context_parallel_size == run.layout.cp


# --- MaxText ------------------------------------------------------------------------------

MAXTEXT = _framework("maxtext_0fe43b75a285.json")
MAXTEXT_LAUNCHES = _launches("maxtext")


@pytest.mark.parametrize("row, run, launch", MAXTEXT_LAUNCHES, ids=[str(r) for r, _, _ in MAXTEXT_LAUNCHES])
def test_maxtext_keys_are_base_yml_keys(row, run, launch):
    assert launch.command[2:4] == ("MaxText/train.py", "MaxText/configs/base.yml")
    kv = dict(a.split("=", 1) for a in launch.command[4:])
    cast = {"int": int, "float": float, "bool": lambda v: {"True": True, "False": False}[v], "str": str}
    for key, value in kv.items():
        assert key in MAXTEXT["keys"], f"{key}: not in base.yml @ {MAXTEXT['ref']} (MaxText refuses it)"
        kind = MAXTEXT["keys"][key]
        if kind in cast:
            cast[kind](value)  # MaxText casts command-line values to base.yml's types
    target = _target(row[3], row[4])
    ici = [int(kv[f"ici_{a}_parallelism"]) for a in ("data", "fsdp", "tensor", "pipeline")]
    dcn = [int(kv[f"dcn_{a}_parallelism"]) for a in ("data", "fsdp", "tensor", "pipeline")]
    assert _prod(ici) == target.ranks_per_node and _prod(dcn) == target.nodes
    assert int(kv["ici_fsdp_parallelism"]) * int(kv["dcn_fsdp_parallelism"]) == run.layout.fsdp
    gbs = float(kv["per_device_batch_size"]) * run.world * int(kv["gradient_accumulation_steps"])
    assert gbs == run.layout.gbs  # MaxText's calculate_global_batch_sizes
    assert kv["remat_policy"] == "save_qkv_proj" and kv["dataset_type"] == "synthetic"


def _prod(xs):
    out = 1
    for x in xs:
        out *= x
    return out


# --- torchtitan ---------------------------------------------------------------------------

TITAN_LAUNCHES = _launches("torchtitan")


@pytest.mark.parametrize("row, run, launch", TITAN_LAUNCHES, ids=[str(r) for r, _, _ in TITAN_LAUNCHES])
def test_torchtitans_config_manager_loads_the_toml(row, run, launch, tmp_path):
    pytest.importorskip("torchtitan")
    from torchtitan.config import ConfigManager

    path = tmp_path / "torchtitan.toml"
    path.write_text(launch.files["torchtitan.toml"], encoding="utf-8")
    jc = ConfigManager().parse_args(["--job.config_file", str(path)])
    p, lay, d = jc.parallelism, run.layout, run.derived
    assert (p.tensor_parallel_degree, p.pipeline_parallel_degree, p.context_parallel_degree) == (lay.tp, lay.pp, lay.cp)
    assert p.data_parallel_shard_degree * p.data_parallel_replicate_degree == d.dp
    assert _prod([p.data_parallel_shard_degree, p.data_parallel_replicate_degree, lay.tp, lay.pp, lay.cp]) == run.world
    local = lay.mbs * d.ga if lay.pp > 1 else lay.mbs  # with PP: GA pipeline microbatches of MBS
    assert (jc.training.local_batch_size, jc.training.global_batch_size) == (local, lay.gbs)
    assert p.pipeline_parallel_microbatch_size == lay.mbs
    # torchtitan's gradient accumulation (train.py: global / (local x DP)) times its pipeline
    # microbatches is the catalog's GA.
    accumulation = lay.gbs // (jc.training.local_batch_size * d.dp)
    assert accumulation * (jc.training.local_batch_size // lay.mbs) == d.ga
    assert jc.training.steps == 50 and jc.metrics.log_freq == 1 and jc.metrics.enable_tensorboard
    assert jc.model.name == "llmb_llama3" and jc.experimental.custom_import == "llmb_titan"
    if run.recipe.dtype == "fp8":
        assert jc.model.converters == ["quantize.linear.float8"]


def test_torchtitan_rejects_what_llmb_must_not_write(tmp_path):
    """The check above can fail: torchtitan's ConfigManager refuses an unknown field."""
    pytest.importorskip("torchtitan")
    from torchtitan.config import ConfigManager

    path = tmp_path / "bad.toml"
    path.write_text("[parallelism]\ntensor_parallel_size = 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        ConfigManager().parse_args(["--job.config_file", str(path)])


@pytest.mark.parametrize("workload, size", [("llama3.1", "8b"), ("llama3.1", "70b"), ("llama3.1", "405b"),
                                            ("llama2-maxtext", "70b"), ("megatron-llama3", "8b")])
def test_torchtitan_builds_exactly_the_catalogs_model(workload, size):
    """torchtitan's own Llama 3 model, built on the meta device from the plugin's arguments,
    has the catalog's widths (its FFN formula rounds to the catalog's FFN)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchtitan")
    from torchtitan.models.llama3 import Transformer, TransformerModelArgs
    from torchtitan.models.llama3.model.args import RoPEScalingArgs

    row = next(r for r in ROWS if r[:2] == (workload, size))
    run = _resolve(*row)
    args = backends.torchtitan.model_args(run)
    rope = args.pop("rope_scaling")
    args.pop("seed")
    args["n_layers"] = 1
    with torch.device("meta"):
        model = Transformer(TransformerModelArgs(**args, rope_scaling_args=RoPEScalingArgs(**rope)))
    block = model.layers["0"]
    m = run.model
    assert tuple(block.feed_forward.w1.weight.shape) == (m.ffn_hidden, m.hidden)
    assert tuple(block.attention.wk.weight.shape) == (m.query_groups * m.kv_channels, m.hidden)
    assert tuple(model.tok_embeddings.weight.shape) == (m.vocab, m.hidden)


def test_the_readmes_backend_table_is_the_codes():
    """The README's table of which workloads each backend expresses, recomputed."""
    readme = (HERE.parent / "README.md").read_text(encoding="utf-8")
    header = "| workload (recipe framework) | " + " | ".join(backends.MODULES) + " |"
    assert header in readme
    table = readme.split(header, 1)[1].split("\n\n", 1)[0].strip().splitlines()[1:]
    written = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table}
    computed = {}
    for wl in sorted({r[0] for r in ROWS}):
        cells = []
        for b in backends.MODULES:
            ok = []
            for row in (r for r in ROWS if r[0] == wl):
                try:
                    _render(b, row)
                    ok.append(True)
                except LlmbError:
                    ok.append(False)
            cells.append("all rows" if all(ok) else "none" if not any(ok) else f"{sum(ok)} of {len(ok)} rows")
        computed[wl] = cells
    assert written == computed


# --- the recipes' knobs, per backend ------------------------------------------------------

def _with_options(row, **options):
    from llmb.plan.options import RunOptions

    workload, size, dtype, gpus, gpu_type = row
    req = RunRequest(workload=workload, size=size, dtype=dtype, proxy=None, gpus=gpus, gpu_type=gpu_type,
                     options=RunOptions(**options))
    return resolve_run(req, check_files=False)


KNOB_ROWS = {"megatron": ("megatron-llama3", "8b", "fp8", 8, "h100"), "nemo2": ("llama3.1", "8b", "bf16", 8, "h100"),
             "nemo1": ("nemotron4", "340b", "bf16", 128, "h100"), "maxtext": ("llama2-maxtext", "70b", "bf16", 64, "h100"),
             "torchtitan": ("llama3.1", "8b", "bf16", 8, "h100")}


def test_a_row_without_tp_comm_overlap_turns_it_off_in_every_framework():
    """The layout row's ``tp_comm_overlap`` reaches Megatron-LM (--tp-comm-overlap), NeMo 1
    (model.ub_tp_comm_overlap) and NeMo 2 (MegatronCommOverlapCallback); off, none of them."""
    from dataclasses import replace

    cases = {"megatron": (("megatron-llama3", "70b", "fp8", 64, "h100"), "--tp-comm-overlap"),
             "nemo1": (("nemotron4", "340b", "bf16", 128, "h100"), "model.ub_tp_comm_overlap=true"),
             "nemo2": (("llama3.1", "70b", "bf16", 64, "h100"), "MegatronCommOverlapCallback, tp_comm_overlap=True")}
    for backend, (row, mark) in cases.items():
        run = _resolve(*row)
        assert run.layout.tp > 1 and run.recipe.tp_comm_overlap, row

        def text(r):
            launch = backends.render(backend, r, _target(row[3], row[4]))
            return " ".join(launch.command) + "\n" + "\n".join(launch.files.values())

        assert mark in text(run), backend
        off = replace(run, recipe=replace(run.recipe, row=run.recipe.row.model_copy(update={"tp_comm_overlap": False})))
        assert mark not in text(off), backend
        if backend == "nemo1":
            assert "model.ub_tp_comm_overlap=false" in text(off)


def test_a_row_with_the_flash_attn_backend_exports_it_to_transformer_engine():
    """The layout row's ``attention_backend: flash`` (the NeMo 1 launcher's Grok-1 and
    Nemotron-4 340B scripts export NVTE_FUSED_ATTN=0) reaches every Transformer Engine
    framework's environment; the cuDNN default adds nothing."""
    from dataclasses import replace

    nemotron = _resolve("nemotron4", "340b", "bf16", 128, "h100")
    assert nemotron.recipe.attention_backend == "flash"
    assert backends.render("nemo1", nemotron, _target(128, "h100")).env["NVTE_FUSED_ATTN"] == "0"
    cases = {"megatron": ("megatron-llama3", "70b", "fp8", 64, "h100"),
             "nemo1": ("grok1", "314b", "bf16", 512, "h100", "25.02"),
             "nemo2": ("llama3.1", "70b", "bf16", 64, "h100")}

    def with_backend(run, backend):
        return replace(run, recipe=replace(run.recipe, row=run.recipe.row.model_copy(
            update={"attention_backend": backend})))

    for backend, row in cases.items():
        run, target = _resolve(*row), _target(row[3], row[4])
        assert "NVTE_FUSED_ATTN" not in backends.render(backend, with_backend(run, "cudnn"), target).env, backend
        assert backends.render(backend, with_backend(run, "flash"), target).env["NVTE_FUSED_ATTN"] == "0", backend


@pytest.mark.parametrize("backend", list(KNOB_ROWS))
def test_the_recipes_knobs_reach_the_framework(backend):
    row = KNOB_ROWS[backend]
    target = _target(row[3], row[4])

    def text(**options):
        launch = backends.render(backend, _with_options(row, **options), target)
        return " ".join(launch.command) + "\n" + "\n".join(launch.files.values()), launch

    plain, _ = text()
    prof, launch = text(profile=True)  # the recipe's profile window: steps 20..25
    expect = {
        "megatron": ["--profile", "--profile-step-start 20", "--profile-step-end 26"],
        "nemo2": ["NsysCallback, start_step=20, end_step=25"],
        "nemo1": ["model.nsys_profile.enabled=true", "model.nsys_profile.start_step=20", "model.nsys_profile.end_step=25"],
        "maxtext": ["profiler=nsys", "skip_first_n_steps_for_profiler=19", "profiler_steps=6"],
        "torchtitan": ["enable_profiling = true", "profile_freq = 25", "profiler_active = 6"],
    }[backend]
    for needle in expect:
        assert needle in prof and needle not in plain, needle
    if backend != "torchtitan":
        assert launch.wrapper[:2] == ("nsys", "profile")  # nsys around the framework's process
    nccl, launch = text(nccl_trace=True)
    assert launch.env["NCCL_DEBUG"] == "INFO"
    steps_flag = {"megatron": "--train-iters 5", "nemo2": "max_steps = 5", "nemo1": "trainer.max_steps=5",
                  "maxtext": "steps=5", "torchtitan": "steps = 5"}[backend]
    assert steps_flag in nccl  # the recipes trace the first 5 steps
    save, _ = text(save_at_end=True)
    load, _ = text(load="/ckpt/run7")
    expect_save = {"megatron": "--save /experiments/EXP/checkpoints", "nemo2": "recipe.log.ckpt.every_n_train_steps = 50",
                   "nemo1": "exp_manager.create_checkpoint_callback=true", "maxtext": "enable_checkpointing=True",
                   "torchtitan": "[checkpoint]\nenable = true"}[backend]
    expect_load = {"megatron": "--load /ckpt/run7", "nemo2": "resume_from_path='/ckpt/run7'",
                   "nemo1": "model.resume_from_checkpoint=/ckpt/run7", "maxtext": "load_full_state_path=/ckpt/run7",
                   "torchtitan": 'initial_load_path = "/ckpt/run7"'}[backend]
    assert expect_save in save and expect_save not in plain
    assert expect_load in load and expect_load not in plain


def test_a_frameworks_own_checkpoint_path_only_needs_to_exist(tmp_path):
    """LOAD_CHECKPOINT_PATH names the framework's checkpoint: llmb's checkpoint checks do not
    apply (they do for its own engine)."""
    from llmb.plan.options import RunOptions

    (tmp_path / "iter_0000050").mkdir()
    req = RunRequest(workload="megatron-llama3", size="8b", proxy=None, gpus=8, options=RunOptions(load=str(tmp_path)))
    run, name = backends.resolve(req, "recipe", accelerator=None)
    assert name == "megatron" and run.options.load == str(tmp_path.resolve())
    with pytest.raises(LlmbError, match="no complete checkpoint"):
        backends.resolve(req, "llmb", accelerator=None)
    missing = req.model_copy(update={"options": RunOptions(load=str(tmp_path / "nope"))})
    with pytest.raises(LlmbError, match="does not exist"):
        backends.resolve(missing, "megatron", accelerator=None)


@pytest.mark.parametrize("row", ROWS, ids=[str(r) for r in ROWS])
def test_submit_dry_run_prints_every_rows_recipe_launch(row, tmp_path, monkeypatch, capsys):
    """``llmb submit ... --backend recipe --dry-run`` for every catalog row: the batch script
    runs the framework's own command (that of the row's baseline); nothing is written."""
    from llmb.cli import main

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "experiments"))
    monkeypatch.delenv("LLMB_CLUSTER_CONFIG", raising=False)
    monkeypatch.setenv("LLMB_INSTALL", str(tmp_path / "install"))
    workload, size, dtype, gpus, gpu_type = row
    argv = ["submit", workload, "--size", size, "--dtype", dtype, "--scale", str(gpus), "--gpu-type", gpu_type,
            "--gpus-per-node", str(GPUS_PER_NODE[gpu_type]), "--backend", "recipe", "--dry-run", "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    (out,) = json.loads(capsys.readouterr().out)
    framework = _resolve(*row).recipe.framework
    assert out["backend"] == framework
    entry = {"nemo2": "nemo2_pretrain.py", "nemo1": "megatron_gpt_pretraining.py", "megatron": "pretrain_gpt.py",
             "maxtext": "MaxText/train.py"}[framework]
    assert entry in out["script"] and "--container-image=" in out["script"]
    assert f"--nodes={max(1, gpus // GPUS_PER_NODE[gpu_type])}" in out["script"]
    assert not (tmp_path / "experiments").exists()


def test_submit_release_picks_that_releases_framework(tmp_path, monkeypatch, capsys):
    """``--release`` on submit: Grok-1 at 512 GPUs is NeMo 2 by default (25.05.02, ETP 1) and
    NeMo 1 with --release 25.02 (its own layout); an unknown release is one line, exit 1."""
    from llmb.cli import main

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "experiments"))
    monkeypatch.delenv("LLMB_CLUSTER_CONFIG", raising=False)
    base = ["submit", "grok1", "-s", "314b", "-n", "512", "--backend", "recipe", "--dry-run", "--json"]
    got = {}
    for release in (None, "25.02", "v24.11.1"):
        capsys.readouterr()
        assert main(base + (["--release", release] if release else [])) == 0
        (out,) = json.loads(capsys.readouterr().out)
        got[release] = out["backend"]
    assert got == {None: "nemo2", "25.02": "nemo1", "v24.11.1": "nemo1"}
    capsys.readouterr()
    assert main(base + ["--release", "26.01"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: grok1 314b has no release '26.01' (releases: 24.11.1, 25.02, 25.05, 25.05.01, 25.05.02)"]
    assert not (tmp_path / "experiments").exists()


@pytest.mark.parametrize("row, run, launch", [t for t in TITAN_LAUNCHES if t[1].layout.pp > 1],
                         ids=[str(t[0]) for t in TITAN_LAUNCHES if t[1].layout.pp > 1])
def test_torchtitan_cuts_the_catalogs_pipeline_stages(row, run, launch, tmp_path):
    """torchtitan's own stage split (distributed/pipeline_parallel.py @ v0.2.2) of the TOML's
    settings gives PP x VP stages holding the catalog's layers per chunk, in order."""
    import math

    pytest.importorskip("torchtitan")
    from torchtitan.config import ConfigManager
    from torchtitan.distributed.pipeline_parallel import generate_llm_fqn_per_model_part

    path = tmp_path / "t.toml"
    path.write_text(launch.files["torchtitan.toml"], encoding="utf-8")
    p = ConfigManager().parse_args(["--job.config_file", str(path)]).parallelism
    layers = run.model.layers
    first, last = p.pipeline_parallel_first_stage_less_layers, p.pipeline_parallel_last_stage_less_layers
    stages = math.ceil((layers + first + last) / p.pipeline_parallel_layers_per_stage)  # as torchtitan computes it
    assert stages == run.layout.pp * (run.layout.vp or 1)
    parts = generate_llm_fqn_per_model_part(stages, layers, first, last)
    per_stage = tuple(sum(1 for name in part if name.startswith("layers.")) for part in parts)
    assert per_stage == run.derived.layers_per_chunk


@pytest.mark.parametrize("backend, workload", [("megatron", "megatron-llama3"), ("nemo2", "llama3.1"),
                                               ("nemo1", "nemotron4")])
def test_a_hostile_data_path_stays_one_argument(backend, workload, tmp_path, monkeypatch, capsys):
    """A dataset prefix with blanks, quotes and $(...) reaches the framework as one value: one
    shell word in the batch script (bash parses it back exactly), a Python literal in NeMo 2's
    script; Pyxis cannot mount such a folder, nor can NeMo 1's Hydra overrides carry it: both
    are refused in one line."""
    import shutil
    import subprocess

    from llmb.cli import main

    sample = HERE.parent / "src" / "llmb" / "data" / "sample"
    folder = tmp_path / "we ird'$(touch PWNED)\"x"
    folder.mkdir()
    for ext in (".bin", ".idx"):
        shutil.copy(sample / f"prose{ext}", folder / f"prose{ext}")
    prefix = str(folder / "prose")
    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "experiments"))
    monkeypatch.delenv("LLMB_CLUSTER_CONFIG", raising=False)
    monkeypatch.setenv("LLMB_INSTALL", str(tmp_path / "install"))
    monkeypatch.chdir(tmp_path)
    gpus = {"megatron": "8", "nemo2": "8", "nemo1": "128"}[backend]
    base = ["submit", workload, "--scale", gpus, "--backend", backend, "--data", prefix, "--dry-run"]
    capsys.readouterr()
    assert main(base) == 1
    hydra = "NeMo 1 reads its settings as Hydra overrides"
    assert (hydra if backend == "nemo1" else "Pyxis cannot mount it") in capsys.readouterr().err
    code = main([*base, "--no-container", "--json"])
    if backend == "nemo1":
        assert code == 1 and hydra in capsys.readouterr().err
        return
    assert code == 0
    (out,) = json.loads(capsys.readouterr().out)
    script = out["script"]
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    words = shlex.split(script.rsplit("\nsrun ", 1)[1].replace("\\\n", " ").split("\n")[0].split(" 2>&1")[0])
    if backend == "megatron":
        assert words[words.index("--data-path") + 1] == prefix
    else:
        tree = ast.parse(out["files"]["nemo2_pretrain.py"])
        paths = [n for n in ast.walk(tree) if isinstance(n, ast.keyword) and n.arg == "paths"]
        assert ast.literal_eval(paths[0].value) == [prefix]
    assert not (tmp_path / "PWNED").exists()


def test_sbatch_and_gpus_per_node_knobs_apply_to_framework_jobs(tmp_path, monkeypatch, capsys):
    """The recipes' SBATCH_* and GPUS_PER_NODE variables shape a framework's job like an engine job's."""
    from llmb.cli import main

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "experiments"))
    monkeypatch.delenv("LLMB_CLUSTER_CONFIG", raising=False)
    monkeypatch.setenv("LLMB_INSTALL", str(tmp_path / "install"))
    for key, value in {"SBATCH_ACCOUNT": "acct1", "SBATCH_PARTITION": "batch", "SBATCH_GPUS_PER_NODE": "4",
                       "GPUS_PER_NODE": "4"}.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    assert main(["submit", "llama3.1", "--scale", "8", "--backend", "recipe", "--dry-run", "--json"]) == 0
    (out,) = json.loads(capsys.readouterr().out)
    script = out["script"]
    for line in ("#SBATCH --account=acct1", "#SBATCH --partition=batch", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --nodes=2"):
        assert line in script
    assert "--nproc-per-node=4" in script and "num_nodes=2, num_gpus_per_node=4" in out["files"]["nemo2_pretrain.py"]


def test_a_full_size_framework_log_enters_the_store_with_its_baseline(tmp_path, monkeypatch):
    """Closing the loop for a GPU framework: a NeMo 2 job's folder (as llmb submit writes it)
    gets a log in NeMo 2's line format (the seed's ``Training epoch 0, iteration N/49 | ...``
    lines, written here: no GPU ran); ingesting it with the recorded format gives the step
    time, the catalog's metrics and the baseline comparison, like an engine run's. The format
    is the recorded one, never guessed: the same log read as Megatron-LM's has no steps."""
    from llmb.catalog import default_catalog
    from llmb.launch import submit as sub
    from llmb.launch import tracking
    from llmb.results.store import Store

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "experiments"))
    cluster = sub.default_cluster().model_copy(update={"experiments_path": str(tmp_path / "experiments")})
    (planned,) = sub.planned_from(default_catalog(), "llama3.1", "8b", "bf16", [8], 1, None, "none", {})
    prepared = sub.write(sub.prepare(planned, cluster, sub.knobs_for({}, cluster, {}), {}, backend="recipe"))
    exp = prepared.experiment_dir
    assert (exp / "nemo2_pretrain.py").is_file() and (exp / "launch.sbatch").is_file()
    lines = [f"Training epoch 0, iteration {i}/49 | lr: 7.496e-06 | global_batch_size: 128 | global_step: {i} | "
             f"peak_memory_usage: 70833405952 | memory_allocated: 44271689728 | reduced_train_loss: 11.96 | "
             f"train_step_timing in s: {12.3 if i > 3 else 20.0} | consumed_samples: {128 * (i + 1)}" for i in range(50)]
    (exp / "log.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    store = Store.open(tmp_path / "jobs.db")
    row = {"run_id": "r1", "log_path": str(exp / "log.txt"), "format": prepared.launch.log_format, "job_id": "7"}
    result = tracking.ingest(store, row)
    assert result is not None and result.parsed.format == "nemo2" and len(result.parsed.records) == 50
    assert result.recipe is not None and result.recipe.baseline is not None  # the published 8-GPU bf16 row
    assert result.metrics["step_time_s"] == pytest.approx(12.3)
    stored = store.get("r1")
    assert stored["format"] == "nemo2" and stored["status"] == "OK" and 0 < stored["mfu"] < 1
    assert stored["workload"] == "llama3.1" and stored["gpus"] == 8
    forced = tracking.ingest(store, {**row, "run_id": "r2", "format": "megatron"})
    assert forced.parsed.format == "megatron" and len(forced.parsed.records) == 0 and store.get("r2")["status"] == "NO_DATA"


@pytest.mark.parametrize("row, run, launch", NEMO2_LAUNCHES, ids=[str(r) for r, _, _ in NEMO2_LAUNCHES])
def test_the_nemo2_recipes_model_class_is_the_catalogs_model(row, run, launch):
    """The catalog's constants, which the script sets, are those of the recipe's own model
    class in NeMo v2.3.0 (field defaults read from nemo/collections/llm/gpt/model/{llama,nemotron}.py):
    the script changes nothing of the published model but the 405b-proxy's layer count."""
    recipe = re.search(r"recipes\.(\w+) import", launch.files["nemo2_pretrain.py"]).group(1)
    cls = NEMO2["model_classes"][recipe]
    d = NEMO2["model_class_defaults"][cls]
    m = run.model
    if recipe in backends.nemo2.STAND_INS:
        _check_stand_in(run, launch, d)
        return
    layers = d["num_layers"] if run.recipe.size != "405b-proxy" else m.layers
    assert (layers, d["hidden_size"], d["ffn_hidden_size"], d["num_attention_heads"], d["num_query_groups"]) == \
        (m.layers, m.hidden, m.ffn_hidden, m.heads, m.query_groups), cls
    assert d.get("rotary_percent", 1.0) == m.rotary_percent
    assert d["normalization"] == ("RMSNorm" if m.norm == "rmsnorm" else "LayerNorm")
    assert bool(d.get("layernorm_zero_centered_gamma")) == m.layernorm_zero_centered_gamma
    if d.get("rotary_base") is not None:
        assert d["rotary_base"] == m.rope_theta
    scaling = m.rope_scaling
    assert (d.get("scale_factor") is not None) == (scaling is not None), cls
    if scaling is not None:
        assert (d["scale_factor"], d["low_freq_factor"], d["high_freq_factor"], d["old_context_len"]) == \
            (scaling.factor, scaling.low_freq_factor, scaling.high_freq_factor, scaling.original_context)
    if m.moe is not None:
        assert (d["num_moe_experts"], d["moe_router_topk"], d["moe_ffn_hidden_size"],
                d["moe_shared_expert_intermediate_size"]) == \
            (m.moe.num_experts, m.moe.top_k, m.moe.expert_ffn_hidden, m.moe.shared_expert_ffn_hidden)


def _check_stand_in(run, launch, d):
    """A stand-in recipe (NeMo has no recipe of the workload): its model class is the same
    architecture as the catalog's (RMSNorm, RoPE, no linear biases, a gated MLP, every layer
    MoE with top-k softmax routing), and the script sets every constant in which the two differ,
    so nothing of the stand-in's own sizes survives."""
    m = run.model
    assert (d["normalization"], d["position_embedding_type"], d["add_bias_linear"], d["gated_linear_unit"]) == \
        ("RMSNorm" if m.norm == "rmsnorm" else "LayerNorm", "rope", False, True)
    assert m.moe is not None and m.moe.router_score == "softmax" and m.moe.shared_experts == 0
    set_ = {path.split(".", 2)[2]: v for path, v in _assignments(ast.parse(launch.files["nemo2_pretrain.py"]))
            if path.startswith("model.config.")}
    ours = {"num_layers": m.layers, "hidden_size": m.hidden, "ffn_hidden_size": m.ffn_hidden,
            "num_attention_heads": m.heads, "num_query_groups": m.query_groups, "seq_length": m.seq_len,
            "rotary_base": m.rope_theta, "num_moe_experts": m.moe.num_experts, "moe_router_topk": m.moe.top_k,
            "moe_router_pre_softmax": not m.moe.normalize_top_k, "layernorm_epsilon": m.norm_eps,
            "share_embeddings_and_output_weights": m.tied_embeddings}
    for key, want in ours.items():
        if d.get(key) != want:
            assert key in set_ and ast.literal_eval(set_[key]) == want, (key, d.get(key), want)
    act = ast.unparse(set_["activation_func"])
    assert act == {"geglu": "torch.nn.functional.gelu", "swiglu": "torch.nn.functional.silu"}[m.activation]
    assert any("has no setting for attn_logit_softcap" in n for n in launch.notes) == (m.attn_logit_softcap is not None)
    set_extras = [f for f in ("attn_logit_softcap", "embedding_multiplier", "output_multiplier", "sandwich_norm")
                  if getattr(m, f) not in (None, False)]
    (note,) = [n for n in launch.notes if "has no setting for" in n]
    assert all(f in note for f in set_extras) and "sandwich_norm" in set_extras  # Grok-1 sets all four


@pytest.mark.parametrize("row, run, launch", MAXTEXT_LAUNCHES, ids=[str(r) for r, _, _ in MAXTEXT_LAUNCHES])
def test_maxtexts_own_llama2_70b_config_is_the_catalogs_model(row, run, launch):
    """The full-size recipe runs MaxText's own configs/models/llama2-70b.yml (``model_name``, as
    the recipe does), whose constants are the catalog's; none of its keys is passed again
    (MaxText refuses a key set by both, pyconfig's validate_no_keys_overwritten_twice). The keys
    llmb would pass for the catalog's model are exactly the file's."""
    kv = dict(a.split("=", 1) for a in launch.command[4:])
    model = MAXTEXT["models"]["llama2-70b"]
    assert kv["model_name"] == "llama2-70b"
    assert not set(model) & set(kv), set(model) & set(kv)
    explicit = backends.maxtext.keys(run, _target(row[3], row[4]))  # what llmb writes for any other model
    m = run.model
    mine = {"base_emb_dim": m.hidden, "base_num_query_heads": m.heads, "base_num_kv_heads": m.query_groups,
            "base_mlp_dim": m.ffn_hidden, "base_num_decoder_layers": m.layers, "head_dim": m.kv_channels,
            "vocab_size": m.vocab, "normalization_layer_epsilon": m.norm_eps,
            "logits_via_embedding": m.tied_embeddings, "decoder_block": "llama2"}
    assert set(mine) == set(backends.maxtext.MODEL_KEYS)
    assert {k: model[k] for k in mine} == mine
    assert model["mlp_activations"] == ["silu", "linear"]  # base.yml's default, SwiGLU
    assert "model_name" in explicit


def test_a_local_framework_run_needs_the_framework_here(tmp_path):
    """``llmb run --backend NAME`` refuses, before any folder exists, a framework this host
    lacks: Megatron-LM's script, NeMo's packages, MaxText's checkout; torchtitan (installed) passes."""
    from llmb.launch.backends import local as framework

    def launch(backend, row, settings=None):
        return backends.render(backend, _resolve(*row), _target(row[3], row[4]), settings)

    from llmb.launch.cluster import BackendSettings

    with pytest.raises(LlmbError, match="no /opt/megatron-lm/pretrain_gpt.py: set backends.megatron.source"):
        framework.check_here(launch("megatron", KNOB_ROWS["megatron"]))
    (tmp_path / "pretrain_gpt.py").write_text("")
    framework.check_here(launch("megatron", KNOB_ROWS["megatron"], BackendSettings(source=str(tmp_path))))
    with pytest.raises(LlmbError, match="nemo is not importable here"):
        framework.check_here(launch("nemo2", KNOB_ROWS["nemo2"]))
    with pytest.raises(LlmbError, match="no MaxText checkout at /opt/maxtext"):
        framework.check_here(launch("maxtext", KNOB_ROWS["maxtext"]))
    pytest.importorskip("torchtitan")
    framework.check_here(launch("torchtitan", KNOB_ROWS["torchtitan"]))
