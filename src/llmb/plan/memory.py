"""Per-GPU memory estimate for one training layout: weights, gradients, optimizer state,
activations, logits and a fixed runtime overhead, with a fits / does-not-fit verdict.

Units: bytes everywhere (``*_bytes``). ``GB`` in printed text means 1e9 bytes, ``GiB`` 2**30.
Parameter counts (per layer, per pipeline rank), byte widths and the recompute levels come
from :mod:`llmb.plan.shapes`; this module turns them into bytes.

What is modelled, and the framework conventions behind it:

* **Static state, Megatron-Core style** (the default): bf16 weights (2 B/param), bf16 gradient
  buffer (2 B/param; the NeMo/Megatron performance recipes reduce gradients in bf16) and the
  distributed optimizer's fp32 main weights + Adam moments (12 B/param) sharded over the
  data-parallel x context-parallel group (experts: over the expert-data-parallel group). This
  reproduces the Llama 3.1 8b log's ``memory_allocated`` (44.27 GB) to 0.3 %.
  FP8 runs keep GEMM weights in FP8 with a cached FP8 transpose (2 B/param in place of the
  bf16 copy: NeMo's FP8 precision sets ``fp8_param_gather``). FP32 runs: fp32 weights and
  gradients and Adam moments only (the weights are the main copy): 16 B/param.
* **FSDP (MaxText style)**, when the layout names an ``fsdp`` group: fp32 weights, fp32
  gradients and Adam moments all sharded over the group (16 B/param / fsdp), plus the bf16
  weights of two gathered layers (the one computing and the one prefetched).
* **Activations** per layer and token, after Korthikanti et al. 2022 ("Reducing activation
  recomputation in large transformer models"), adapted to what current kernels save: flash
  attention (no s^2 score tensors), GQA (K/V narrower than Q), gated (SwiGLU) or plain MLPs,
  sequence parallelism (everything outside the TP region is split by TP too), context
  parallelism (tokens split by CP), MoE expert activations sized by conservation of routed
  tokens over the expert layout (EP x ETP x EDP), and FP8 GEMM inputs saved as 1 byte.
* **Recompute**: ``none``; ``selective`` recomputes the norms and the MLP activation function
  (cheap element-wise work, Megatron's ``layernorm`` / activation recompute modules); ``mlp``
  keeps only the MLP block's input and recomputes the whole MLP (Megatron's ``mlp`` module,
  MaxText policies that save the attention projections but not the MLP); ``save_qkv`` keeps
  each layer's input and its Q/K/V projections and recomputes the rest of the layer
  (MaxText's ``remat_policy=save_qkv_proj``); ``full`` keeps only each layer's input and
  recomputes the layer during backward (one layer's full activations live at a time, under
  both).
* **In-flight micro-batches**: 1F1B keeps ``min(PP - rank, GA)`` micro-batches of a stage's
  layers alive on pipeline rank ``rank``; the interleaved schedule keeps
  ``min(2 (PP - rank - 1) + (VP - 1) PP + 1, GA x VP)`` model chunks (Megatron's warm-up count
  plus the one in flight).
* **Logits** on the last stage, one micro-batch at a time: bf16 logits, the fp32 softmax the
  vocab-parallel cross entropy saves, and an fp32 gradient workspace (10 B per element).
* **Runtime overhead** outside the allocator's count: a fixed 3 GiB (CUDA context ~0.6 GiB,
  NCCL communicator buffers, cuBLAS/TE workspaces) plus 5 % of the allocated peak for the
  caching allocator's fragmentation (reserved exceeds allocated).

``peak_allocated_bytes`` corresponds to what ``torch.cuda.max_memory_allocated`` reports
(NeMo's ``peak_memory_usage``); the verdict adds the runtime overhead and compares with the
GPU's HBM. The catalog's ``hbm_gb`` is the marketed figure, which for these parts is GiB
(an "80 GB" H100 shows 81559 MiB in nvidia-smi), so capacity is ``hbm_gb * 2**30``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from llmb.catalog.schema import GpuSpec, ModelSpec
from llmb.plan.layout import DerivedLayout
from llmb.plan.shapes import (
    RECOMPUTE_LEVELS,
    act_bytes,
    check_recompute,
    first_of_kind,
    gemm_input_bytes,
    kind_counts,
    layer_params,
    param_count,
    per_model_cache,
    rank_params,
)

GIB = 2**30
RUNTIME_OVERHEAD_BYTES = 3 * GIB
FRAGMENTATION = 0.05  # reserved / allocated - 1 of PyTorch's caching allocator, typical
# Megatron-Core distributed optimizer: fp32 main weights + Adam m + v, sharded over DP.
ADAM_MOMENTS_BYTES_PER_PARAM = 8
OPTIMIZER_BYTES_PER_PARAM = 4 + ADAM_MOMENTS_BYTES_PER_PARAM
# Checkpoints hold bf16 weights plus the fp32 optimizer state: 2 + 12 bytes per parameter.
CHECKPOINT_BYTES_PER_PARAM = 14
FP8_WEIGHT_BYTES_PER_PARAM = 2  # FP8 weight + its FP8 transpose (fp8_param_gather), per GEMM param
LOGITS_BYTES_PER_ELEMENT = 10  # bf16 logits + fp32 softmax (saved) + fp32 gradient workspace


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------


def layer_activation_bytes_per_token(
    model: ModelSpec, derived: DerivedLayout, index: int, dtype: str, recompute: str
) -> float:
    """Activation bytes one layer saves for backward, per token of a micro-batch, on one GPU.

    "Per token" means per token of the full (pre-CP) sequence handled by this GPU's CP rank:
    multiply by ``MBS x seq / CP``. Everything is divided by TP (sequence parallelism splits
    the norm/residual region, TP splits the rest)."""
    return _activation_bytes(model, derived.layout.tp, derived.etp, model.is_moe_layer(index), dtype, recompute)


@per_model_cache
def _activation_bytes(
    model: ModelSpec, tp: int, etp: int, moe_layer: bool, dtype: str, recompute: str
) -> float:
    h, d = model.hidden, model.kv_channels
    q, kv = model.heads * d, model.query_groups * d
    a, g = act_bytes(dtype), gemm_input_bytes(dtype)
    if recompute == "full":
        return a * h / tp  # only the layer input (sequence-parallel shard)
    if recompute == "save_qkv":
        return a * (h + q + 2 * kv) / tp  # the layer input and the Q/K/V projections

    norms_saved = recompute != "selective"
    # Attention block: norm input, QKV GEMM input (norm output), Q/K/V for flash attention,
    # attention output (input of the output projection). Softmax statistics are fp32 per head.
    attn = a * h + (g * h if norms_saved else 0) + a * (q + 2 * kv) + g * q + 4 * model.heads
    # MLP block: norm input, FC1 input, FC1 output, activation output (FC2 input).
    moe = model.moe
    mlp_norm = a * h + (g * h if norms_saved else 0)
    if recompute == "mlp":
        router = 4 * moe.num_experts if moe is not None and moe_layer else 0
        return (attn + a * h + router) / tp
    if moe is not None and moe_layer:
        # Routed experts: per GPU, tokens x top_k copies, the hidden input replicated over
        # ETP (each ETP rank needs all of h) and the FFN width split by ETP; the permuted
        # input and the un-permuted output are also kept. Conservation over the expert layout
        # gives (per token of this CP rank, per GPU) top_k * (...)/TP, see module docstring.
        f = moe.expert_ffn_hidden
        up = (2 if model.gated else 1) * f
        act_out = g * f if norms_saved else 0
        experts = moe.top_k * (2 * a * h * etp + g * h * etp + a * up + act_out)
        fs = moe.shared_experts * moe.shared_expert_ffn_hidden
        shared = 0.0
        if fs:
            up_s = (2 if model.gated else 1) * fs
            shared = a * up_s + (g * fs if norms_saved else 0)
        router = 4 * moe.num_experts  # fp32 router probabilities
        mlp = mlp_norm + experts + shared + router
    else:
        f = model.ffn_hidden
        up = (2 if model.gated else 1) * f
        mlp = mlp_norm + a * up + (g * f if norms_saved else 0)
    return (attn + mlp) / tp


@dataclass(frozen=True)
class StageMemory:
    """Per-GPU bytes on one pipeline rank."""

    rank: int
    weights_bytes: float
    grads_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    logits_bytes: float
    in_flight: float  # micro-batches (1F1B) or model chunks (interleaved) kept alive

    @property
    def static_bytes(self) -> float:
        return self.weights_bytes + self.grads_bytes + self.optimizer_bytes

    @property
    def peak_allocated_bytes(self) -> float:
        return self.static_bytes + self.activations_bytes + self.logits_bytes


@dataclass(frozen=True)
class MemoryEstimate:
    """The worst pipeline rank's memory and the verdict. Units: bytes."""

    recompute: str
    worst: StageMemory
    stages: tuple[StageMemory, ...]
    runtime_overhead_bytes: float
    capacity_bytes: float
    notes: tuple[str, ...] = field(default=())

    @property
    def peak_allocated_bytes(self) -> float:
        return self.worst.peak_allocated_bytes

    @property
    def total_bytes(self) -> float:
        return self.peak_allocated_bytes + self.runtime_overhead_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.capacity_bytes

    @property
    def headroom_bytes(self) -> float:
        return self.capacity_bytes - self.total_bytes

    def as_dict(self) -> dict[str, object]:
        w = self.worst
        return {
            "recompute": self.recompute,
            "worst_rank": w.rank,
            "weights_bytes": w.weights_bytes,
            "grads_bytes": w.grads_bytes,
            "optimizer_bytes": w.optimizer_bytes,
            "activations_bytes": w.activations_bytes,
            "logits_bytes": w.logits_bytes,
            "in_flight": w.in_flight,
            "peak_allocated_bytes": self.peak_allocated_bytes,
            "runtime_overhead_bytes": self.runtime_overhead_bytes,
            "total_bytes": self.total_bytes,
            "capacity_bytes": self.capacity_bytes,
            "fits": self.fits,
            "stages": [asdict(s) for s in self.stages],
            "notes": list(self.notes),
        }


def _in_flight_chunks(pp: int, vp: int, ga: int, rank: int) -> int:
    """Model chunks (VP > 1) or micro-batches (VP = 1) whose activations rank ``rank`` holds at
    its peak."""
    if vp == 1:
        return min(pp - rank, ga)
    return min(2 * (pp - rank - 1) + (vp - 1) * pp + 1, ga * vp)


def estimate_memory(
    model: ModelSpec,
    derived: DerivedLayout,
    gpu: GpuSpec,
    dtype: str,
    recompute: str = "none",
    worst_only: bool = False,
) -> MemoryEstimate:
    """Per-GPU memory of training ``model`` with ``derived`` on ``gpu`` (bytes).

    ``worst_only`` evaluates only the ranks that can be the worst - the first and last, and
    of the middle ranks holding the same layers the lowest (it keeps the most micro-batches
    in flight) - for layout search; ``stages`` then lists those ranks only."""
    check_recompute(recompute)
    lay = derived.layout
    tp, pp, cp = lay.tp, lay.pp, lay.cp
    vp = derived.vp
    fsdp = lay.fsdp
    tokens = lay.mbs * model.seq_len / cp  # tokens per micro-batch on one CP rank
    a = act_bytes(dtype)
    notes: list[str] = []

    # Layers come in at most two kinds (dense, MoE): compute each kind once.
    first_of = first_of_kind(model)
    kind_params = {k: layer_params(model, i) for k, i in first_of.items()}
    kind_act = {
        k: layer_activation_bytes_per_token(model, derived, i, dtype, recompute)
        for k, i in first_of.items()
    }
    kind_act_full = (
        {k: layer_activation_bytes_per_token(model, derived, i, dtype, "none") for k, i in first_of.items()}
        if recompute in ("save_qkv", "full")
        else {}
    )

    stages: list[StageMemory] = []
    all_counts = kind_counts(model, derived.layers_per_chunk, pp)
    ranks: list[int] = list(range(pp))
    if worst_only and pp > 2:
        seen: set[tuple[tuple[bool, int], ...]] = set()
        ranks = [0]
        for rank in range(1, pp - 1):
            sig = tuple(sorted(all_counts[rank].items()))
            if sig not in seen:
                seen.add(sig)
                ranks.append(rank)
        ranks.append(pp - 1)
    for rank in ranks:
        counts = all_counts[rank]
        held = rank_params(model, derived, rank)
        params = held.total

        if fsdp:
            # MaxText-style FSDP: everything sharded over the group (fp32 weights, grads,
            # Adam m and v), plus two layers of gathered bf16 weights.
            biggest = max((kind_params[k].total for k, n in counts.items() if n), default=0)
            weights = 4 * params / fsdp + 2 * 2 * biggest / tp
            grads = 4 * params / fsdp
            optimizer = 8 * params / fsdp
        else:
            weights = a * params
            if dtype == "fp8":
                # fp8_param_gather (NeMo's FP8 precision): GEMM weights live in FP8 (1 byte)
                # with a cached FP8 transpose (1 byte) instead of bf16.
                weights += (FP8_WEIGHT_BYTES_PER_PARAM - a) * held.gemm
            grads = a * params
            dp_shard = derived.dp * cp
            # fp32 runs train the fp32 weights directly: no separate main copy, Adam m and v only.
            per_param = OPTIMIZER_BYTES_PER_PARAM if dtype != "fp32" else ADAM_MOMENTS_BYTES_PER_PARAM
            optimizer = per_param * (held.dense / dp_shard + held.experts / derived.edp)

        # Activations: the in-flight chunks, each a micro-batch through one chunk's layers.
        n_chunks = _in_flight_chunks(pp, vp, derived.ga, rank)
        # The chunks of one rank hold (nearly) equal layer counts: a micro-batch through one
        # chunk keeps the rank's per-micro-batch activations divided by VP.
        per_microbatch = tokens * sum(n * kind_act[k] for k, n in counts.items())
        activations = n_chunks * per_microbatch / vp
        if recompute in ("save_qkv", "full") and counts:
            # During backward one layer's full activations are rebuilt and alive.
            activations += tokens * max(kind_act_full[k] for k, n in counts.items() if n)
        logits = 0.0
        if rank == pp - 1:
            logits = tokens * model.vocab / tp * LOGITS_BYTES_PER_ELEMENT
        stages.append(
            StageMemory(
                rank=rank,
                weights_bytes=weights,
                grads_bytes=grads,
                optimizer_bytes=optimizer,
                activations_bytes=activations,
                logits_bytes=logits,
                in_flight=float(n_chunks),
            )
        )

    worst = max(stages, key=lambda s: s.peak_allocated_bytes)
    return MemoryEstimate(
        recompute=recompute,
        worst=worst,
        stages=tuple(stages),
        runtime_overhead_bytes=RUNTIME_OVERHEAD_BYTES + FRAGMENTATION * worst.peak_allocated_bytes,
        capacity_bytes=gpu.hbm_gb * GIB,
        notes=tuple(notes),
    )


def least_recompute_that_fits(
    model: ModelSpec, derived: DerivedLayout, gpu: GpuSpec, dtype: str
) -> MemoryEstimate:
    """The estimate at the lightest recompute level that fits (``full`` if none fits).

    Recipes pick the least recomputation their memory allows; this is llmb's stand-in when a
    workload does not say which level it uses."""
    est = None
    for level in RECOMPUTE_LEVELS:
        est = estimate_memory(model, derived, gpu, dtype, level)
        if est.fits:
            return est
    assert est is not None
    return est


def checkpoint_bytes(model: ModelSpec) -> float:
    """Size of a full training checkpoint (bf16 weights + fp32 main weights and Adam moments)."""
    return float(CHECKPOINT_BYTES_PER_PARAM * param_count(model).total)
