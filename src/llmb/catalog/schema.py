"""Typed shape of the catalog's data files.

Every model here forbids unknown keys and checks types strictly, so a typo in a workload file
fails loudly with the file and the field named (see :mod:`llmb.catalog.loader`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Dtype = Literal["bf16", "fp8", "fp32"]
#: Transformer Engine's attention kernels a recipe selects: cuDNN's fused attention
#: (NVTE_FUSED_ATTN=1, the default) or the flash-attn package (NVTE_FUSED_ATTN=0).
AttentionBackend = Literal["cudnn", "flash"]
DTYPES: tuple[str, ...] = ("bf16", "fp8", "fp32")

PositiveInt = int  # documented alias; positivity is enforced with Field(gt=0) below


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MoESpec(Strict):
    """Mixture-of-experts constants. Dense layers use the model's ``ffn_hidden``."""

    num_experts: int = Field(gt=0)
    top_k: int = Field(gt=0)
    expert_ffn_hidden: int = Field(gt=0, description="FFN width of one routed expert")
    shared_experts: int = Field(default=0, ge=0)
    shared_expert_ffn_hidden: int = Field(default=0, ge=0)
    layer_step: int = Field(default=1, gt=0, description="every layer_step-th layer is MoE")
    first_layer: int = Field(default=0, ge=0, description="index of the first MoE layer")
    capacity_factor: float | None = Field(default=None, gt=0)
    router_score: Literal["sigmoid", "softmax"] = Field(
        default="sigmoid",
        description=(
            "gate weight of a chosen expert: the sigmoid of its router logit (Llama 4), or the "
            "softmax over all experts' logits (Mixtral, Grok-1)"
        ),
    )
    normalize_top_k: bool = Field(
        default=False,
        description="the top-k softmax weights are renormalised to sum to 1 (Mixtral; softmax scores only)",
    )
    apply_probs_on_input: bool = Field(
        default=False,
        description=(
            "the router's score scales each chosen expert's input (Llama 4; Megatron-Core's "
            "moe_apply_probs_on_input), not its output"
        ),
    )
    assumptions: str = ""

    @model_validator(mode="after")
    def _check(self) -> MoESpec:
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k ({self.top_k}) exceeds num_experts ({self.num_experts})")
        if self.shared_experts and not self.shared_expert_ffn_hidden:
            raise ValueError("shared_experts > 0 needs shared_expert_ffn_hidden")
        if self.normalize_top_k and self.router_score != "softmax":
            raise ValueError("normalize_top_k needs router_score: softmax")
        return self


class RopeScaling(Strict):
    """Llama 3.1's frequency-dependent RoPE scaling (``rope_type: llama3``).

    Wavelengths longer than ``original_context / low_freq_factor`` are stretched by ``factor``,
    those shorter than ``original_context / high_freq_factor`` are kept, and the band between
    is interpolated smoothly (Meta's Llama 3.1 reference, transformers' ``rope_type`` llama3,
    NeMo 2's ``Llama31Config``)."""

    rope_type: Literal["llama3"] = "llama3"
    factor: float = Field(gt=0)
    low_freq_factor: float = Field(gt=0)
    high_freq_factor: float = Field(gt=0)
    original_context: int = Field(gt=0, description="context length the base model was trained at (tokens)")

    @model_validator(mode="after")
    def _check(self) -> RopeScaling:
        if self.high_freq_factor <= self.low_freq_factor:
            raise ValueError(
                f"high_freq_factor ({self.high_freq_factor}) must exceed low_freq_factor ({self.low_freq_factor})"
            )
        return self


class ModelSpec(Strict):
    """Architecture constants of one model size (unit: elements, not bytes)."""

    family: Literal["llama", "nemotron", "llama4", "grok"]
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    ffn_hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    query_groups: int = Field(gt=0)
    head_dim: int | None = Field(default=None, gt=0)
    vocab: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    activation: Literal["swiglu", "geglu", "squared_relu", "gelu"]
    norm: Literal["rmsnorm", "layernorm"]
    tied_embeddings: bool = False
    rope_theta: float = 500000.0
    norm_eps: float = Field(default=1e-5, gt=0)
    layernorm_zero_centered_gamma: bool = Field(
        default=False,
        description=(
            "the norm's gamma is stored as weight - 1 and applied as 1 + weight (Nemotron-4: "
            "Megatron's apply_layernorm_1p, transformers' NemotronLayerNorm1P)"
        ),
    )
    rotary_percent: float = Field(
        default=1.0, gt=0, le=1, description="share of each head's channels that RoPE rotates (the first ones)"
    )
    rope_scaling: RopeScaling | None = None
    nope_layer_interval: int | None = Field(
        default=None,
        gt=0,
        description=(
            "every n-th layer has no RoPE (NoPE): layer i (0-based) when (i + 1) % n == 0, as "
            "transformers' Llama 4 no_rope_layers"
        ),
    )
    attn_logit_softcap: float | None = Field(
        default=None,
        gt=0,
        description="attention scores soft-capped as cap * tanh(score / cap) before the softmax (Grok-1: 30)",
    )
    embedding_multiplier: float | None = Field(
        default=None, gt=0, description="input embeddings scaled by this factor (Grok-1: 78.38, sqrt(hidden))"
    )
    output_multiplier: float | None = Field(
        default=None, gt=0, description="logits scaled by this factor (Grok-1: 0.577, 1/sqrt(3))"
    )
    sandwich_norm: bool = Field(
        default=False,
        description=(
            "a norm on the output of the attention and of the MLP/MoE block too, before each "
            "residual add (Grok-1's four RMSNorms per layer)"
        ),
    )
    moe: MoESpec | None = None
    assumptions: str = ""

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.heads % self.query_groups:
            raise ValueError(
                f"heads ({self.heads}) must be divisible by query_groups ({self.query_groups})"
            )
        if self.head_dim is None and self.hidden % self.heads:
            raise ValueError(
                f"hidden ({self.hidden}) must be divisible by heads ({self.heads}) "
                "unless head_dim is given"
            )
        rotary = self.kv_channels * self.rotary_percent
        if rotary != int(rotary) or int(rotary) % 2:
            raise ValueError(
                f"rotary_percent ({self.rotary_percent}) of head_dim {self.kv_channels} must give an even "
                f"number of rotated channels, got {rotary:g}"
            )
        return self

    @property
    def kv_channels(self) -> int:
        """Per-head width (``head_dim``)."""
        return self.head_dim if self.head_dim is not None else self.hidden // self.heads

    @property
    def gated(self) -> bool:
        return self.activation in ("swiglu", "geglu")

    @property
    def rotary_dim(self) -> int:
        """Channels of each head that RoPE rotates (the first ``rotary_dim``)."""
        return int(self.kv_channels * self.rotary_percent)

    def uses_rope(self, index: int) -> bool:
        """Whether layer ``index`` (0-based) applies RoPE (False on NoPE layers)."""
        n = self.nope_layer_interval
        return n is None or (index + 1) % n != 0

    def is_moe_layer(self, index: int) -> bool:
        m = self.moe
        return m is not None and index >= m.first_layer and (index - m.first_layer) % m.layer_step == 0

    @property
    def moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.layers))

    def with_layers(self, layers: int) -> ModelSpec:
        return self.model_copy(update={"layers": layers})


class Published(Strict):
    """Derived sizes as printed in the source table, kept to check our algebra against."""

    dp: int | None = Field(default=None, gt=0)
    ga: int | None = Field(default=None, gt=0)
    fsdp: int | None = Field(default=None, gt=0)


class LayoutRow(Strict):
    """One row of a recipe's layout table: a parallel layout at one scale."""

    gpu_type: str
    dtypes: tuple[Dtype, ...] = Field(min_length=1)
    gpus: int = Field(gt=0)
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    cp: int = Field(default=1, gt=0)
    ep: int = Field(default=1, gt=0)
    etp: int | None = Field(default=None, gt=0)
    vp: int | None = Field(default=None, gt=0)
    mbs: int = Field(gt=0)
    gbs: int = Field(gt=0)
    fsdp: int | None = Field(default=None, gt=0, description="FSDP sharding group size")
    layers: int | None = Field(default=None, gt=0, description="layer-count override (proxies)")
    seq_len: int | None = Field(default=None, gt=0, description="sequence-length override (a row's own)")
    releases: tuple[str, ...] = Field(
        default=(),
        description="recipe releases this row is the layout of (empty: every release of the size)",
    )
    embedding_in_pipeline_split: bool = False
    loss_in_pipeline_split: bool = False
    tp_comm_overlap: bool = Field(
        default=True,
        description=(
            "the recipe overlaps TP communication with compute (Transformer Engine userbuffers: "
            "NeMo's ub_tp_comm_overlap / tp_comm_overlap, Megatron-LM's --tp-comm-overlap); "
            "false where its config turns it off"
        ),
    )
    attention_backend: AttentionBackend = Field(
        default="cudnn",
        description=(
            "Transformer Engine's attention kernels in the recipe: cudnn (cuDNN fused "
            "attention, NVTE_FUSED_ATTN=1: NeMo 2's and Megatron-LM's perf scripts, MaxText's "
            "cudnn_flash_te) or flash (the flash-attn package, where the launcher exports "
            "NVTE_FUSED_ATTN=0)"
        ),
    )
    recompute: Literal["none", "selective", "mlp", "save_qkv", "full"] | None = Field(
        default=None,
        description=(
            "activation recompute the recipe uses, where its source or the framework's public "
            "config says so (none / selective / mlp / save_qkv / full); unset: llmb takes the "
            "lightest level that fits in memory"
        ),
    )
    published: Published = Published()
    source: str
    notes: str = ""


class Baseline(Strict):
    """Published performance at one scale. Percentages are stored as printed (55.2 = 55.2 %)."""

    gpu_type: str
    dtype: Dtype
    gpus: int = Field(gt=0)
    step_time_s: float | None = Field(default=None, gt=0)
    tokens_per_s: float | None = Field(default=None, gt=0)
    mfu_pct: float | None = Field(default=None, gt=0)
    days_per_1t_tokens: float | None = Field(default=None, gt=0)
    tokens_per_s_per_gpu: float | None = Field(default=None, gt=0)
    tflops_per_gpu: float | None = Field(default=None, gt=0)
    source: str
    release: str = Field(
        min_length=1,
        description=(
            "the recipe release the number is from (the container or release tag its source "
            "names, e.g. 25.04.01); filled from the source's release when the row gives none"
        ),
    )
    notes: str = ""


class SizeSpec(Strict):
    model: ModelSpec
    published_flops_per_sample: float | None = Field(
        default=None, gt=0, description="model FLOPs for GBS=1 as printed in the source"
    )
    layouts: tuple[LayoutRow, ...] = ()
    baselines: tuple[Baseline, ...] = ()
    notes: str = ""


class Source(Strict):
    document: str
    title: str = ""
    release: str | None = Field(
        default=None,
        description="the recipe release (container / release tag) the document is from; 'unstated' where it names none",
    )
    framework: Literal["nemo1", "nemo2", "megatron", "mbridge", "maxtext", "torchtitan", "llmb"] | None = Field(
        default=None, description="the framework of this source's runs, where it is not the workload's"
    )


def release_key(release: str) -> tuple[tuple[int, ...], str]:
    """Order of releases, oldest first: by the numbers they contain (24.11.1 < 25.02 <
    25.05.01 < 25.05.02; maxtext-2024.12.09 by 2024, 12, 9), 'unstated' before any."""
    import re

    return tuple(int(n) for n in re.findall(r"\d+", release)), release


def newest_release(releases) -> str | None:  # type: ignore[no-untyped-def]
    found = sorted(set(releases), key=release_key)
    return found[-1] if found else None


def fill_releases(data: object) -> object:
    """A workload file's data with every baseline lacking its own ``release`` given its
    source's (applied to the raw data before validation)."""
    if not isinstance(data, dict):
        return data
    sources, sizes = data.get("sources"), data.get("sizes")
    if not isinstance(sources, dict) or not isinstance(sizes, dict):
        return data
    new_sizes = {}
    for key, size in sizes.items():
        if isinstance(size, dict) and isinstance(size.get("baselines"), list):
            rows = []
            for b in size["baselines"]:
                if isinstance(b, dict) and "release" not in b:
                    src = sources.get(b.get("source"))
                    rel = src.get("release") if isinstance(src, dict) else None
                    if rel is not None:
                        b = {**b, "release": rel}
                rows.append(b)
            size = {**size, "baselines": rows}
        new_sizes[key] = size
    return {**data, "sizes": new_sizes}


class Workload(Strict):
    name: str
    title: str
    framework: Literal["nemo1", "nemo2", "megatron", "mbridge", "maxtext", "torchtitan", "llmb"]
    recipe_flops: Literal["llama", "gpt", "llama4_moe"]
    aliases: tuple[str, ...] = ()
    default_gpu_type: str = "h100"
    default_dtype: Dtype = "bf16"
    max_steps: int = Field(default=50, gt=0)
    profile_steps: tuple[int, int] = (20, 25)
    sources: dict[str, Source]
    sizes: dict[str, SizeSpec] = Field(min_length=1)
    notes: str = ""

    def framework_of(self, source: str) -> str:
        """The framework a source's runs used (the workload's unless the source says)."""
        return self.sources[source].framework or self.framework

    def releases(self, size: str) -> list[str]:
        """Releases of a size's baselines and release-bound layout rows, oldest first."""
        spec = self.sizes[size]
        found = {b.release for b in spec.baselines} | {r for row in spec.layouts for r in row.releases}
        return sorted(found, key=release_key)

    @model_validator(mode="after")
    def _check_sources(self) -> Workload:
        for size_name, size in self.sizes.items():
            for kind, rows in (("layout", size.layouts), ("baseline", size.baselines)):
                for row in rows:
                    if row.source not in self.sources:
                        raise ValueError(
                            f"size {size_name}: {kind} row cites source {row.source!r}, "
                            f"not one of {sorted(self.sources)}"
                        )
        return self


class GpuSpec(Strict):
    """One accelerator: dense peak math throughput and its memory and links.

    Units: peaks in TFLOP/s (1e12); ``hbm_gb`` is the capacity as marketed, which for these
    parts is GiB (an "80 GB" H100 holds 80 x 2**30 bytes); bandwidths in GB/s (1e9 bytes/s) per
    GPU, one direction.
    """

    name: str
    aliases: tuple[str, ...] = ()
    arch: Literal["ampere", "hopper", "blackwell"] = Field(
        default="hopper", description="tensor-core generation (stated for the reader; the predictor uses the measured ceiling instead)"
    )
    peak_tflops: dict[Dtype, float]
    hbm_gb: float = Field(gt=0)
    hbm_bandwidth_gbps: float = Field(gt=0)
    nvlink_gbps: float = Field(gt=0)
    nvlink_domain: int = Field(gt=0)
    node_gpus: int | None = Field(
        default=None, gt=0,
        description="GPUs per node (an NVL72 compute tray holds 4); unset: one node is one NVLink domain",
    )
    nic_gbps: float = Field(gt=0)
    achievable_tflops: dict[Dtype, float] = Field(
        default_factory=dict,
        description="measured best-case dense matmul TFLOP/s (MAMF: a search over GEMM shapes on one GPU); "
                    "the predictor scales this GPU's tensor-core efficiency by its share of peak against H100's",
    )
    source: str
    notes: str = ""

    def achievable_share(self, dtype: str) -> float | None:
        """The measured matmul ceiling as a share of the dense peak (None: not measured)."""
        if dtype not in self.achievable_tflops or dtype not in self.peak_tflops:
            return None
        return self.achievable_tflops[dtype] / self.peak_tflops[dtype]  # type: ignore[index]

    def job_domain(self, gpus: int) -> int:
        """The NVLink domain one job of ``gpus`` GPUs gets: the whole domain when the job fits
        in one; beyond that the Slurm segment NeMo's launcher asks for (NVIDIA/NeMo
        scripts/performance/utils.py @ 7a8f1cc7, ``slurm_executor``: on 4-GPU nodes past 18
        nodes, ``--segment`` = the largest divisor of the node count up to 18), so that a
        32-, 64- or 128-node GB200 job is placed 16 nodes (64 GPUs) to a rack."""
        node = self.node_gpus or self.nvlink_domain
        if gpus <= self.nvlink_domain or node >= self.nvlink_domain or gpus % node:
            return self.nvlink_domain
        nodes, per_domain = gpus // node, self.nvlink_domain // node
        segment = max(s for s in range(1, per_domain + 1) if nodes % s == 0)
        return segment * node

    def peak_flops(self, dtype: str) -> float:
        """Dense peak in FLOP/s for ``dtype``; a clear error when the GPU lacks it."""
        from llmb.errors import CatalogError

        if dtype not in self.peak_tflops:
            raise CatalogError(
                f"{self.name} has no {dtype} peak in the hardware table "
                f"(it has: {', '.join(sorted(self.peak_tflops))})"
            )
        return self.peak_tflops[dtype] * 1e12  # type: ignore[index]
