"""Step-time model: what one training step costs on the slowest pipeline stage, as a breakdown.

Units: seconds (``*_s``), FLOP, bytes; bandwidths in bytes/s. This module owns the
efficiencies (:class:`Efficiency`), the per-layer costs and the step; parameter counts and
byte widths come from :mod:`llmb.plan.shapes`, collective costs from :mod:`llmb.plan.network`.

The model, per GPU, for one micro-batch through one transformer layer:

* **GEMMs** (QKV, attention output, MLP or experts, router, and the output layer on the last
  stage) run at ``peak(dtype) x gemm_eff(dtype) x f(M) f(N) f(K)`` with
  ``f(d) = d / (d + knee)``: small or thin matrices lose efficiency. The knee is given at
  H100's BF16 peak and scales with the run's peak as ``(peak / H100's BF16 peak) **
  knee_exponent`` (FP8 on H100: ratio 2; GB200: 2.48): a GEMM's fixed per-tile costs are
  worth more math where the math is faster (exponent 1: they take the same time at any
  peak, as XLA's measured GEMMs say; not fitted). Forward +
  backward = 3 x the forward FLOPs; recompute adds the forward again (all of it under
  ``full``, the MLP's under ``mlp``; under ``save_qkv``, a JAX remat policy, all but the
  saved QKV projection and the MLP's down-projection FC2, whose recomputed output the
  backward never reads and XLA eliminates as dead code: the backward of FC2 needs its input,
  and the layer's output is the next layer's saved input). FP8 runs use the FP8 peak for the
  layer GEMMs; the output layer, router and attention stay BF16 (Transformer Engine and
  MaxText defaults).
* **Attention** (flash attention, causal): 2 x tokens x seq x width forward FLOPs per layer
  (QK^T and AV over half the keys on average), 3.5 x that for forward + backward (the backward
  recomputes the scores), at ``peak(bf16) x attention_eff``: cuDNN's fused attention
  (``attention``), or the flash-attn package's FlashAttention-2 (``attention_flash``) where the
  recipe's layout row says ``attention_backend: flash`` (the NeMo 1 launcher's Grok-1 and
  Nemotron-4 340B scripts export NVTE_FUSED_ATTN=0).
* **Element-wise work** is counted in bytes moved, forward and backward separately (a
  backward kernel does not move twice its forward's bytes): norms, fused residual adds, fused
  RoPE on Q and K, the MLP activation, MoE permute / un-permute, the cross entropy, and in FP8
  runs Transformer Engine's cast-transposes (each GEMM input once forward unless a norm
  writes it in FP8 directly, each output gradient once backward). It runs at
  ``HBM bandwidth x hbm_eff``.
* **Communication**, priced by :mod:`llmb.plan.network` (ring / all-to-all / p2p on a
  two-level network: NVLink inside a domain of ``nvlink_domain`` GPUs, each GPU's NIC beyond
  it; ranks ordered TP-CP-DP-PP; every ring also pays ``ring_step_us`` per network step and
  3.4 / 14 of it per NVLink step, every all-to-all as much per peer). A job's NVLink domain
  is the GPU's (8 on HGX H100) or, on GB200 NVL72 past one rack, the Slurm segment NeMo's
  launcher requests (:meth:`~llmb.catalog.schema.GpuSpec.job_domain`: 64 GPUs for 32 to 128
  nodes):
  - TP with sequence parallelism: 4 all-gather/reduce-scatter in forward, 6 in backward per
    layer (the backward re-gathers inputs for the weight gradients), half of them in a MoE
    layer without a shared expert (the routed block's tokens move by the EP and ETP
    collectives instead); FP8 runs cast before gathering, so the 6 all-gathers move half the
    bytes (the 4 reduce-scatters stay BF16);
  - CP ring attention: K/V passed CP-1 times forward, K/V and their gradients backward,
    hidden behind the attention kernels except for what exceeds them;
  - EP: dispatch and combine all-to-all, forward and backward, plus the all-to-all of the
    router probabilities (Megatron-Core 0.12's dispatcher sends them beside the tokens) and
    the ETP all-gather / reduce-scatter of the routed tokens;
  - PP: activations forward and gradients backward at every chunk boundary, over NVLink only
    when the whole pipeline shares one domain (it runs at its slowest hop);
  - a fraction ``overlap`` of TP, EP and PP traffic hides behind compute (TE userbuffers,
    the shared expert overlapping the dispatch, Megatron's overlapped p2p); the rest is
    exposed. Two exceptions the recipes state: TP traffic is all exposed where the recipe
    turns TP communication overlap off (``tp_comm_overlap: false`` in its layout row; every
    published recipe in the catalog turns it on), and the EP dispatch and
    combine are all exposed in a model without a shared expert (Grok-1): Megatron-Core's
    all-to-all dispatcher runs on the compute stream, and only NeMo's
    ``moe_shared_expert_overlap`` gives it something to hide behind;
  - DP (distributed optimizer): gradient reduce-scatter (bf16) and parameter all-gather
    (bf16; FP8 under NeMo's fp8_param_gather) over the DP x CP group, hidden behind the last
    micro-batch's backward and the first one's forward except for what exceeds them;
  - FSDP (MaxText): per-layer weight all-gathers (bf16, forward and backward) and gradient
    reduce-scatters (fp32), the forward gather hidden behind that layer's forward, the backward
    gather and the reduce-scatter behind twice it (recomputation not counted as cover),
    except for the excess; with DP replicas on top of the FSDP group, each layer's gradient
    shard is also all-reduced across the replicas inside that layer's backward (XLA reduces
    over the whole data mesh in the scanned backward) and hides like the reduce-scatter;
    only the rest (embeddings, output layer) is all-reduced after the backward, exposed.
* **MoE layers**, as mechanisms, none of them with a fitted parameter of its own: the router
  GEMM (BF16); token permutation and un-permutation (element-wise bytes per routed copy); the
  dispatch / combine all-to-all, inside the job's NVLink domain over NVLink and beyond it
  over the NICs, with its per-peer latency; the expert GEMMs as dense GEMMs of their shape
  (the GEMM knee prices their tokens per expert and their width), times ``expert_gemm``,
  ``m / (m + expert_knee)`` for ``m`` tokens per local expert and ``expert_fp8`` in FP8 runs,
  which are held at 1, 0 and 1: no published run informs a grouped-GEMM cost beyond its
  shape, the GPU kit measures it; and load imbalance: the busiest of the EP ranks receives
  ``1 + expert_load_cv x sqrt(2 ln EP / (E / EP))`` times the mean (the expected maximum of
  EP loads with the router's skew ``expert_load_cv``), at most the recipe's capacity factor
  where it sets one (tokens beyond it are dropped), which scales its expert GEMMs,
  permutation and all-to-all bytes. Every MoE recipe in the catalog pads each expert to a
  capacity factor of 1.0, so none is skewed and the skew is not fitted either.
* **GPU generation**: the efficiencies are shares of H100's peaks. Another GPU's tensor-core
  work (GEMMs, attention) runs at them times its measured matmul ceiling's share of peak over
  H100's (``achievable_tflops`` in the hardware table: MAMF measurements, per dtype; GB200
  0.93 in BF16 and 1.04 in FP8), and its knees (fixed per-tile and per-expert costs, in
  elements at H100's BF16 peak) scale with its peak over H100's as above: the per-expert knee
  by the ratio (2.48 on GB200), the GEMM knee by the ratio to the power ``knee_exponent``.
  Peaks, HBM bandwidth, NVLink rate and domain and NIC come from the hardware table; nothing
  is fitted per GPU.
* **Pipeline**: ``step = (GA + (PP - 1) / VP) x t_microbatch(slowest stage)``: the 1F1B
  bubble (PP - 1) / (VP x GA) of the steady state.
* **Optimizer**: Adam over the local shard, memory-bound (~32 bytes per parameter).

The efficiency parameters are global (one set for every workload) and fitted by
:mod:`llmb.plan.calibrate`; ``Efficiency.roofline()`` is the uncalibrated roofline (every
efficiency 1, nothing overlapped, no ring latency, datasheet peaks).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import get_args

from llmb.catalog.schema import AttentionBackend, GpuSpec, ModelSpec
from llmb.errors import LlmbError
from llmb.plan.layout import DerivedLayout
from llmb.plan.network import Net
from llmb.plan.shapes import (
    act_bytes,
    check_recompute,
    kind_counts,
    layer_params,
    per_model_cache,
    rank_params,
)

#: Bytes per element of the 6 TP all-gathers of an FP8 run, relative to BF16: Transformer
#: Engine gathers the FP8 casts (0.5). The alternative, BF16 gathers (1.0), was tested as an
#: explanation of the FP8 + TP residuals and fits worse (benchmarks/predict_fp8_tp.py).
FP8_TP_GATHER_SHARE = 0.5
ATTENTION_BACKENDS: tuple[str, ...] = get_args(AttentionBackend)
ADAM_BYTES_PER_PARAM = 32  # read fp32 param, grad, m, v; write param, m, v; write bf16 copy


@dataclass(frozen=True)
class Efficiency:
    """Global efficiency parameters of the step-time model (fractions unless stated)."""

    # Defaults are the calibration's prior (llmb.plan.calibrate.PRIOR) and its starting point.
    gemm_bf16: float = 0.78  # large BF16 GEMM, fraction of the dense BF16 peak
    gemm_fp8: float = 0.68  # large FP8 GEMM, fraction of the dense FP8 peak
    # Elements at H100's BF16 peak: f(d) = d / (d + knee) per GEMM dimension. The fixed per-tile
    # and per-launch costs it stands for take at least a fixed time, so on a GPU (or in a dtype)
    # with a higher peak they are worth more elements: the knee scales by the run's peak over H100's
    # BF16 peak (FP8 on H100: 2; BF16 on GB200: 2.48) to the power ``knee_exponent``.
    gemm_knee: float = 256.0
    # 1: the fixed costs take the same time at any peak; above 1 they take longer where the
    # peak is higher (an FP8 GEMM's scaling epilogue). Not fitted: measured. The knees that fit
    # XLA's measured GEMMs best grow with the peak by 0.98-1.04 in this exponent from H100 to
    # B200 (benchmarks/predict_gemm_shapes.py); fitted on step times it rested on GB200's rows
    # (0.96 of its information lost without them) and settled in a worse optimum (1.13, loss
    # 0.00225 against 0.00219 here).
    knee_exponent: float = 1.0
    attention: float = 0.55  # cuDNN fused attention forward + backward, fraction of the BF16 peak
    # The flash-attn package's kernels (FlashAttention-2) where a recipe selects them
    # (NVTE_FUSED_ATTN=0) instead of cuDNN's: FA2 does not use Hopper's asynchronous tensor
    # cores; its paper and FlashAttention-3's measure ~35 % of H100's BF16 peak forward and
    # backward (the prior).
    attention_flash: float = 0.35
    hbm: float = 0.80  # element-wise kernels, fraction of HBM bandwidth
    link: float = 0.80  # NCCL bus bandwidth, fraction of the NVLink / NIC line rate
    overlap: float = 0.70  # fraction of TP, EP and PP traffic hidden behind compute
    # The three grouped-GEMM factors are not fitted: no published run informs them. Every
    # catalog MoE layout but Maverick's GB200 one holds a single expert per GPU, whose GEMMs
    # are dense GEMMs of their shape, and the dense knee already prices their tokens and
    # width. Fitted, the per-expert knee and the FP8 factor rested on Grok-1 alone (0.89 and
    # 0.95 of their information lost without it) and, with Grok-1 held out, took up what
    # Maverick's rows lacked, predicting Grok-1's NeMo 2 rows 20-35 % too slow. The GPU
    # kit's ``gemm`` check measures them (expert_gemm_share).
    # Grouped expert GEMMs relative to dense GEMMs of their shape (1: as efficient).
    expert_gemm: float = 1.0
    # Grouped-GEMM fixed cost per expert, in tokens at H100's BF16 peak: each local expert's
    # GEMMs would run at m / (m + expert_knee) of a dense GEMM of their shape, m its tokens;
    # scaled by peak like ``gemm_knee``. 0: none beyond the dense knee.
    expert_knee: float = 0.0
    # FP8 grouped expert GEMMs relative to FP8 dense GEMMs; 1 = as efficient.
    expert_fp8: float = 1.0
    # Router skew: coefficient of variation of the tokens each expert receives, for dropless
    # layouts (no capacity factor). The slowest EP rank (of EP ranks, each holding E/EP
    # experts) sets the pace of the expert GEMMs, the permutation and the all-to-all: load
    # factor 1 + cv * sqrt(2 ln(EP) / (E/EP)), the expected maximum of EP loads of that
    # spread. Not fitted (every catalog MoE recipe pads to capacity factor 1.0): 0.06, what a
    # randomly initialised router of Maverick's shape gives on mock data
    # (benchmarks/router_skew_mock_data.py).
    expert_load_cv: float = 0.06
    # Not fitted: the weight of the hardware table's measured matmul ceilings (1: a GPU's
    # tensor-core efficiencies scale by its ceiling's share of peak over H100's; 0: datasheet
    # peaks only, as the uncalibrated roofline has it).
    measured_ceiling: float = 1.0
    # Latency of one ring step across the network, microseconds (a step inside an NVLink
    # domain costs NVLINK_STEP_RATIO of it). Prior: NCCL's own tuning model (src/graph/
    # tuning.cc, hwLat, Ring/Simple): 14 us per network step, 3.4 us per NVLink step.
    ring_step_us: float = 14.0

    @classmethod
    def roofline(cls) -> Efficiency:
        """Every unit at its datasheet peak, nothing overlapped: the uncalibrated roofline."""
        return cls(
            gemm_bf16=1.0,
            gemm_fp8=1.0,
            gemm_knee=0.0,
            knee_exponent=1.0,
            attention=1.0,
            attention_flash=1.0,
            hbm=1.0,
            link=1.0,
            overlap=0.0,
            expert_gemm=1.0,
            expert_knee=0.0,
            expert_fp8=1.0,
            expert_load_cv=0.0,
            ring_step_us=0.0,
            measured_ceiling=0.0,
        )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> Efficiency:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise LlmbError(f"unknown efficiency parameter(s): {', '.join(sorted(unknown))}")
        return cls(**{k: float(v) for k, v in data.items()})


@dataclass(frozen=True)
class StepBreakdown:
    """Seconds per training step on the slowest pipeline stage, by cause.

    The compute terms include recomputation; the communication terms are the exposed parts
    (the ``*_total_s`` fields give the traffic before overlap). They add up to
    ``step_time_s``."""

    gemm_s: float
    attention_s: float
    elementwise_s: float
    tp_comm_s: float
    cp_comm_s: float
    ep_comm_s: float
    pp_comm_s: float
    fsdp_comm_s: float
    bubble_s: float
    dp_comm_s: float
    optimizer_s: float
    tp_comm_total_s: float
    cp_comm_total_s: float
    ep_comm_total_s: float
    pp_comm_total_s: float
    dp_comm_total_s: float
    microbatch_s: float  # one micro-batch through the slowest stage, forward + backward
    slowest_stage: int
    recompute: str

    @property
    def compute_s(self) -> float:
        return self.gemm_s + self.attention_s + self.elementwise_s

    @property
    def step_time_s(self) -> float:
        return (
            self.compute_s
            + self.tp_comm_s
            + self.cp_comm_s
            + self.ep_comm_s
            + self.pp_comm_s
            + self.fsdp_comm_s
            + self.bubble_s
            + self.dp_comm_s
            + self.optimizer_s
        )

    def as_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "compute_s": self.compute_s, "step_time_s": self.step_time_s}


# ---------------------------------------------------------------------------------------------
# Per-layer costs
# ---------------------------------------------------------------------------------------------


def _gemm_knee(eff: Efficiency, hw: _Hw) -> float:
    """The GEMM knee of this GPU and dtype. It is given in elements at H100's BF16 peak. A
    GEMM's fixed per-tile costs (pipeline fill, the epilogue) are worth more math at a higher
    peak: at least in proportion (knee_exponent 1: the same time at any precision and on any
    GPU), more where they also take longer there (an FP8 epilogue's scaling)."""
    return eff.gemm_knee * hw.knee_scale**eff.knee_exponent


def _gemm_ceiling(eff: Efficiency, hw: _Hw, dtype: str) -> float:
    """The share of the dtype's peak an unboundedly large dense GEMM runs at."""
    return {"fp8": eff.gemm_fp8}.get(dtype, eff.gemm_bf16) * tensor_scale(eff, hw)


def gemm_share(m: float, n: float, k: float, gpu: GpuSpec, dtype: str, eff: Efficiency) -> float:
    """The share of ``gpu``'s ``dtype`` peak the predictor runs one dense ``m x n x k`` GEMM
    at (``2 m n k`` FLOPs): what a GEMM-shape measurement on the GPU checks."""
    hw = _hw_of(gpu, dtype)
    return _gemm_ceiling(eff, hw, dtype) * _shape(m, n, k, _gemm_knee(eff, hw))


def _expert_factor(eff: Efficiency, hw: _Hw, tokens: float, fp8: bool) -> float:
    """What a routed expert's GEMMs run at beyond a dense GEMM of their shape: the grouped
    kernel's efficiency, the per-expert fixed cost (``tokens`` per local expert against the
    expert knee, which scales with the peak like a launch), the FP8 grouped-GEMM factor."""
    e_knee = eff.expert_knee * hw.knee_scale
    return eff.expert_gemm * tokens / (tokens + e_knee) * (eff.expert_fp8 if fp8 else 1.0)


def expert_gemm_share(m: float, n: float, k: float, gpu: GpuSpec, dtype: str, eff: Efficiency) -> float:
    """The share of ``gpu``'s ``dtype`` peak the predictor runs one routed expert's ``m x n x k``
    GEMM at, ``m`` its tokens (what the GPU kit's expert-GEMM measurement checks)."""
    return gemm_share(m, n, k, gpu, dtype, eff) * _expert_factor(eff, _hw_of(gpu, dtype), m, dtype == "fp8")


def _shape(m: float, n: float, k: float, knee: float) -> float:
    if knee <= 0:
        return 1.0
    return (m / (m + knee)) * (n / (n + knee)) * (k / (k + knee))


@dataclass(frozen=True)
class _LayerCost:
    """One layer, one micro-batch, one GPU: forward + backward seconds."""

    gemm_fwd_s: float
    qkv_fwd_s: float  # the QKV projection's share of gemm_fwd_s
    fc2_fwd_s: float  # the MLP down-projection's (FC2, routed and shared experts') share
    attention_fwd_s: float
    elementwise_fwd_s: float
    elementwise_bwd_s: float
    selective_extra_s: float  # element-wise forward work redone under selective recompute
    mlp_fwd_s: float  # forward of the MLP block (GEMMs and element-wise), redone under "mlp"
    tp_s: float  # traffic before overlap
    cp_s: float
    ep_s: float
    fsdp_ag_s: float  # one all-gather of this layer's weights (FSDP)
    fsdp_rs_s: float  # one reduce-scatter of its gradients (+ their all-reduce across replicas)


def _layer_cost(
    model: ModelSpec,
    derived: DerivedLayout,
    gpu: GpuSpec,
    dtype: str,
    eff: Efficiency,
    moe_layer: bool,
    hw: _Hw | None = None,
) -> _LayerCost:
    """``hw``: the job's :func:`_job_hw`, where the caller has it already."""
    lay = derived.layout
    # A layer's cost depends on these sizes only (not on PP, VP or DP): cache on them, so a
    # layout search pays for each distinct combination once.
    hw = hw or _job_hw(gpu, dtype, lay.gpus)
    return _layer_cost_cached(
        model, lay.tp, lay.cp, lay.ep, derived.etp, lay.mbs, lay.fsdp, _fsdp_replicas(derived), hw, dtype, eff,
        moe_layer,
    )


def _fsdp_replicas(derived: DerivedLayout) -> int:
    """Data-parallel replicas of the FSDP group (1 without FSDP)."""
    fsdp = derived.layout.fsdp
    return max(1, derived.dp // fsdp) if fsdp else 1


@dataclass(frozen=True)
class _Hw:
    """The GPU numbers a layer's cost needs (hashable, unlike the catalog's GpuSpec)."""

    peak_flops: float  # dense peak of the run's dtype, FLOP/s
    peak_bf16_flops: float
    hbm_gbps: float
    nvlink_gbps: float
    nic_gbps: float
    nvlink_domain: int
    ceiling: float = 1.0  # measured matmul share of peak over the reference GPU's, run's dtype
    ceiling_bf16: float = 1.0  # the same in BF16 (attention, router, output layer)
    reference_bf16_flops: float = 989e12  # the reference GPU's BF16 peak, where the knees are given

    @property
    def knee_scale(self) -> float:
        """What the knees (fixed costs in elements at the reference BF16 peak) scale by in the
        run's dtype: its peak over the reference's."""
        return self.peak_flops / self.reference_bf16_flops

    @property
    def knee_scale_bf16(self) -> float:
        """The same for the GEMMs that stay BF16 (the output layer)."""
        return self.peak_bf16_flops / self.reference_bf16_flops


#: The GPU whose shares of peak the fitted efficiencies are (most published rows are H100's).
REFERENCE_GPU = "h100"


def _reference_gpu() -> GpuSpec:
    from llmb.catalog import default_catalog  # the hardware table the efficiencies are fitted with

    return default_catalog().gpu(REFERENCE_GPU)


def ceiling_ratio(gpu: GpuSpec, dtype: str) -> float:
    """How a GPU's measured matmul ceiling (the hardware table's ``achievable_tflops``) compares
    with the reference GPU's, both as shares of their datasheet peaks; 1 where either is not
    measured."""
    mine, ref = gpu.achievable_share(dtype), _reference_gpu().achievable_share(dtype)
    return mine / ref if mine is not None and ref is not None else 1.0


def tensor_scale(eff: Efficiency, hw: _Hw, bf16: bool = False) -> float:
    """The tensor-core efficiency multiplier of a GPU against the reference (H100: 1): its
    measured matmul ceiling against H100's (``measured_ceiling`` 0 ignores it)."""
    return (hw.ceiling_bf16 if bf16 else hw.ceiling) ** eff.measured_ceiling


def load_factor(eff: Efficiency, num_experts: int, ep: int, capacity_factor: float | None = None) -> float:
    """How much more than the mean the busiest of ``ep`` expert-parallel ranks receives. With
    a capacity factor no expert takes more than that multiple of its even share (the rest
    is dropped), so no rank does either."""
    if ep <= 1 or eff.expert_load_cv <= 0:
        return 1.0
    local = num_experts / ep
    load = 1.0 + eff.expert_load_cv * math.sqrt(2 * math.log(ep) / local)
    return min(load, capacity_factor) if capacity_factor else load


def _job_hw(gpu: GpuSpec, dtype: str, gpus: int) -> _Hw:
    """The numbers of ``gpu`` in ``dtype`` for a job of ``gpus`` GPUs (its NVLink domain)."""
    return _hw_of(gpu, dtype, gpu.job_domain(gpus))


@per_model_cache
def _hw_of(gpu: GpuSpec, dtype: str, domain: int | None = None) -> _Hw:
    """The numbers of ``gpu`` in ``dtype``; ``domain``: the NVLink domain a job gets
    (:meth:`GpuSpec.job_domain`), the GPU's own by default."""
    return _Hw(
        peak_flops=gpu.peak_flops(dtype),
        peak_bf16_flops=gpu.peak_flops("bf16") if dtype != "fp32" else gpu.peak_flops(dtype),
        hbm_gbps=gpu.hbm_bandwidth_gbps,
        nvlink_gbps=gpu.nvlink_gbps,
        nic_gbps=gpu.nic_gbps,
        nvlink_domain=domain or gpu.nvlink_domain,
        ceiling=ceiling_ratio(gpu, dtype),
        ceiling_bf16=ceiling_ratio(gpu, "bf16" if dtype != "fp32" else dtype),
        reference_bf16_flops=_reference_gpu().peak_flops("bf16"),
    )


@per_model_cache
def _layer_cost_cached(
    model: ModelSpec,
    tp: int,
    cp: int,
    ep: int,
    etp: int,
    mbs: int,
    fsdp: int | None,
    replicas: int,
    hw: _Hw,
    dtype: str,
    eff: Efficiency,
    moe_layer: bool,
) -> _LayerCost:
    s = model.seq_len
    t = mbs * s / cp  # tokens per micro-batch on this CP rank
    h, d = model.hidden, model.kv_channels
    q, kv = model.heads * d, model.query_groups * d
    kv_local = max(kv / tp, d)  # TP beyond the KV groups replicates KV heads
    a = act_bytes(dtype)
    gated = model.gated
    net = Net.of(hw, eff.link, eff.ring_step_us)
    knee = _gemm_knee(eff, hw)
    peak_layer = hw.peak_flops
    peak_bf16 = hw.peak_bf16_flops
    arch_bf16 = tensor_scale(eff, hw, bf16=True)
    gemm_eff = _gemm_ceiling(eff, hw, dtype)

    def gemm(m: float, n: float, k: float, peak: float = peak_layer, e: float = gemm_eff) -> float:
        return 2 * m * n * k / (peak * e * _shape(m, n, k, knee))

    # Attention block GEMMs and the flash-attention core.
    qkv = gemm(t, q / tp + 2 * kv_local, h)
    g = qkv + gemm(t, h, q / tp)
    attn_flops = 2 * t * s * q / tp  # causal: QK^T and AV over s/2 keys, 2 FLOP per MAC
    attn = attn_flops / (peak_bf16 * eff.attention * arch_bf16)

    # Element-wise traffic in bytes per token of this CP rank, forward (``fw``) and backward
    # (``bw``) counted separately, because a backward kernel moves a different number of bytes
    # than its forward (not twice as many, unlike the GEMMs): a norm reads x and writes y
    # (2 h) forward, reads x and dy and writes dx (3 h) backward; a fused residual add moves
    # 3 h both ways; RoPE (fused, Q and K only) reads and writes q + kv both ways; SwiGLU
    # reads gate and up and writes one (3 f) forward, reads three and writes two (5 f)
    # backward; squared ReLU moves 2 f forward and 3 f backward. ``*_tp`` is split by TP
    # (sequence-parallel regions and TP-split widths), ``*_gpu`` is already per GPU.
    fp8 = dtype == "fp8"
    ct = a + 2  # one FP8 cast-transpose: read the bf16 tensor, write FP8 and its transpose

    def act(width: float) -> tuple[float, float]:
        return ((3 if gated else 2) * a * width, (5 if gated else 3) * a * width)

    fw_tp = 2 * (2 * a * h) + 2 * (3 * a * h) + 2 * a * (q + kv)
    bw_tp = 2 * (3 * a * h) + 2 * (3 * a * h) + 2 * a * (q + kv)
    sel_tp = 2 * (2 * a * h)  # the norms, redone under selective recompute (plus activations)
    fw_gpu = bw_gpu = sel_gpu = 0.0
    if fp8:
        # Transformer Engine (delayed scaling) casts each GEMM input to FP8 once forward and
        # each output gradient once backward, with a transposed copy for the weight-gradient
        # GEMM. The norms write their FP8 output directly (LayerNormLinear), so only the
        # attention-output (q) input needs its own cast here; backward the output gradients
        # of QKV (q + 2 kv, TP-split) and of the output projection (h: cast on the sequence-
        # parallel shard, then all-gathered in FP8, so also split by TP).
        fw_tp += ct * q
        bw_tp += ct * (q + 2 * kv + h)

    g_attn, fw_attn_tp, fw_attn_gpu = g, fw_tp, fw_gpu
    moe = model.moe
    ep_bytes = etp_bytes = probs_bytes = 0.0
    if moe_layer and moe is not None:
        e_loc = moe.num_experts / ep
        f = moe.expert_ffn_hidden
        up = (2 if gated else 1) * f
        load = load_factor(eff, moe.num_experts, ep, moe.capacity_factor)  # the busiest EP rank's share over the mean
        m_e = t * moe.top_k * etp / (tp * e_loc)  # tokens per local expert (mean)
        grouped = _expert_factor(eff, hw, m_e, fp8)
        fc2 = load * e_loc * gemm(m_e, h, f / etp) / grouped
        g += load * e_loc * gemm(m_e, up / etp, h) / grouped + fc2
        g += gemm(t / tp, moe.num_experts, h, peak_bf16, eff.gemm_bf16 * arch_bf16)  # router
        routed = load * moe.top_k * etp / tp  # routed token copies on the busiest GPU, per token of this rank
        # Permute and un-permute (2 h each way per routed copy), the expert activation (its
        # width split by ETP); FP8: the expert FC1 input (permuted, no fused norm) and FC2
        # input forward, both output gradients backward.
        afw, abw = act(f / etp)
        fw_gpu += routed * (2 * 2 * a * h + afw + (ct * (h + f / etp) if fp8 else 0.0))
        bw_gpu += routed * (2 * 2 * a * h + abw + (ct * (up / etp + h) if fp8 else 0.0))
        sel_gpu += routed * afw
        fs = moe.shared_experts * moe.shared_expert_ffn_hidden
        if fs:
            up_s = (2 if gated else 1) * fs
            fc2 += gemm(t, h, fs / tp)
            g += gemm(t, up_s / tp, h) + gemm(t, h, fs / tp)
            afw, abw = act(fs)
            fw_tp += afw + (ct * fs if fp8 else 0.0)
            bw_tp += abw + (ct * (up_s + h) if fp8 else 0.0)
            sel_tp += afw
        # Dispatch + combine, forward and backward: 4 all-to-alls of this GPU's sequence-
        # parallel share of the routed copies; the copies then reach the ETP ranks of an
        # expert by an all-gather (and return by a reduce-scatter) inside the ETP group.
        ep_bytes = load * t * moe.top_k * h * a / tp
        etp_bytes = load * t * moe.top_k * h * a
        # Megatron-Core's all-to-all dispatcher also exchanges the routed copies' router
        # probabilities (fp32, one per copy), forward and backward: two more all-to-alls,
        # whose cost is their per-peer latency (token_dispatcher.py @ 7094270c, the commit
        # dgxc-benchmarking v25.05 installs: ``global_probs = all_to_all(...)``).
        probs_bytes = load * t * moe.top_k * 4 / tp
    else:
        f = model.ffn_hidden
        up = (2 if gated else 1) * f
        fc2 = gemm(t, h, f / tp)
        g += gemm(t, up / tp, h) + fc2
        afw, abw = act(f)
        fw_tp += afw + (ct * f if fp8 else 0.0)  # FP8: the FC2 input cast
        bw_tp += abw + (ct * (up + h) if fp8 else 0.0)  # FP8: FC1's and FC2's output gradients
        sel_tp += afw
    hbm = hw.hbm_gbps * 1e9 * eff.hbm
    ew_fwd_s = t * (fw_tp / tp + fw_gpu) / hbm
    ew_bwd_s = t * (bw_tp / tp + bw_gpu) / hbm
    # The MLP block's forward, redone under "mlp" recompute (its norm, casts and GEMMs).
    mlp_fwd = (g - g_attn) + t * ((fw_tp - fw_attn_tp + 2 * a * h) / tp + fw_gpu - fw_attn_gpu) / hbm
    sel_s = t * (sel_tp / tp + sel_gpu) / hbm

    # Communication per layer per micro-batch (before overlap).
    # TP with sequence parallelism: forward 2 all-gathers (inputs of QKV and FC1) and 2
    # reduce-scatters (outputs of the projection and FC2); backward 2 all-gathers of output
    # gradients, 2 reduce-scatters of input gradients and 2 re-gathers of inputs for the
    # weight gradients: per TP-split block (attention, MLP) 2 reduce-scatters and 3
    # all-gathers. FP8 runs (Transformer Engine) cast before gathering, so the all-gathers
    # move 1-byte elements; the reduce-scatters stay BF16. A routed MoE block is not TP-split:
    # its sequence-parallel shard goes straight to the dispatch (the EP all-to-all, then the
    # ETP gather above); a shared expert is a TP-split MLP of its own.
    gathers = 3 * (FP8_TP_GATHER_SHARE if dtype == "fp8" else 1.0)
    blocks = 1 if moe_layer and moe is not None and not moe.shared_experts else 2
    tp_s = blocks * (2 + gathers) * net.ring(t * h * a, tp, 1) if tp > 1 else 0.0
    cp_s = 0.0
    if cp > 1:
        step_bytes = t * 2 * kv_local * a
        same = tp * cp <= hw.nvlink_domain  # the whole CP ring inside one NVLink domain
        cp_s = 3 * (cp - 1) * net.p2p(step_bytes, same)
    ep_s = 4 * net.all_to_all(ep_bytes, ep, etp) + 2 * net.all_to_all(probs_bytes, ep, etp) if ep > 1 and ep_bytes else 0.0
    ep_s += 4 * net.ring(etp_bytes, etp, 1) if etp > 1 else 0.0
    fsdp_ag = fsdp_rs = 0.0
    if fsdp and fsdp > 1:
        lp = layer_params(model, 0)
        params = lp.total / tp
        fsdp_ag = net.ring(2 * params, fsdp, tp * cp)
        fsdp_rs = net.ring(4 * params, fsdp, tp * cp)
        if replicas > 1:
            # XLA reduces each layer's gradients over the whole data mesh inside the scanned
            # backward: after the reduce-scatter over the FSDP group, an all-reduce of the
            # layer's gradient shard across the replicas, hidden like the reduce-scatter.
            fsdp_rs += 2 * net.ring(4 * params / fsdp, replicas, tp * cp * fsdp)
    return _LayerCost(
        gemm_fwd_s=g,
        qkv_fwd_s=qkv,
        fc2_fwd_s=fc2,
        attention_fwd_s=attn,
        elementwise_fwd_s=ew_fwd_s,
        elementwise_bwd_s=ew_bwd_s,
        selective_extra_s=sel_s,
        mlp_fwd_s=mlp_fwd,
        tp_s=tp_s,
        cp_s=cp_s,
        ep_s=ep_s,
        fsdp_ag_s=fsdp_ag,
        fsdp_rs_s=fsdp_rs,
    )


# ---------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------


def predict_step(
    model: ModelSpec,
    derived: DerivedLayout,
    gpu: GpuSpec,
    dtype: str,
    eff: Efficiency,
    recompute: str = "none",
    tp_overlap: bool = True,
    attention_backend: str = "cudnn",
) -> StepBreakdown:
    """Predicted step time of training ``model`` with ``derived`` on ``gpu``, as a breakdown.

    ``tp_overlap``: the recipe overlaps TP communication with compute (Transformer Engine
    userbuffers); False exposes all of it. ``attention_backend``: ``cudnn`` (cuDNN fused
    attention) or ``flash`` (the flash-attn package, at ``attention_flash``)."""
    check_recompute(recompute)
    if attention_backend not in ATTENTION_BACKENDS:
        raise LlmbError(f"unknown attention backend {attention_backend!r} (expected one of {', '.join(ATTENTION_BACKENDS)})")
    if attention_backend == "flash":
        eff = replace(eff, attention=eff.attention_flash)
    lay = derived.layout
    tp, pp, cp = lay.tp, lay.pp, lay.cp
    vp, ga = derived.vp, derived.ga
    hw = _job_hw(gpu, dtype, lay.gpus)
    net = Net.of(hw, eff.link, eff.ring_step_us)
    a = act_bytes(dtype)
    t = lay.mbs * model.seq_len / cp
    h, v = model.hidden, model.vocab
    exposed = 1.0 - eff.overlap
    tp_exposed = exposed if tp_overlap else 1.0
    # The dispatch / combine hide behind the shared expert's GEMMs (NeMo sets
    # moe_shared_expert_overlap) by the same fraction as TP and PP traffic; without a shared
    # expert nothing runs beside them. (Fitting them as fully exposed in Maverick, which has
    # one, made its H100 rows 15 % too slow.)
    ep_exposed = exposed if model.moe is not None and model.moe.shared_experts else 1.0

    costs = {
        kind: _layer_cost(model, derived, gpu, dtype, eff, kind, hw)
        for kind in ({False, True} if model.moe is not None else {False})
    }
    # Forward + backward multipliers (backward = 2 x forward), plus recomputation.
    redo_layer = recompute in ("save_qkv", "full")
    gemm_mult = 3.0 + (1.0 if redo_layer else 0.0)
    attn_mult = 3.5 + (1.0 if redo_layer else 0.0)
    ew_fwd_mult = 2.0 if redo_layer else 1.0

    peak_bf16 = hw.peak_bf16_flops
    out_eff = eff.gemm_bf16 * tensor_scale(eff, hw, bf16=True)
    hbm = gpu.hbm_bandwidth_gbps * 1e9 * eff.hbm

    per_stage = []
    counts = kind_counts(model, derived.layers_per_chunk, pp)
    seen: dict[tuple, dict[str, float]] = {}
    for rank in range(pp):
        # Stages with the same layers (and not the last one) cost the same: compute once.
        signature = (tuple(sorted(counts[rank].items())), rank == pp - 1)
        if signature in seen:
            per_stage.append(seen[signature])
            continue
        n_chunks = vp
        g = at = ew = tpc = cpc = epc = 0.0
        fsdp_exposed = 0.0
        for kind, n in counts[rank].items():
            c = costs[kind]
            g += n * gemm_mult * c.gemm_fwd_s
            if recompute == "save_qkv":
                # JAX remat (MaxText's save_qkv_proj): the saved Q/K/V projections are not
                # recomputed, and XLA drops the recomputed FC2 as dead code: the backward
                # needs FC2's input, never its output (the next layer's input is saved).
                g -= n * (c.qkv_fwd_s + c.fc2_fwd_s)
            at += n * attn_mult * c.attention_fwd_s
            ew += n * (ew_fwd_mult * c.elementwise_fwd_s + c.elementwise_bwd_s)
            if recompute == "selective":
                ew += n * c.selective_extra_s
            elif recompute == "mlp":
                g += n * c.mlp_fwd_s  # booked as GEMM time: it is mostly the MLP GEMMs
            tpc += n * c.tp_s
            cpc += n * c.cp_s
            epc += n * c.ep_s
            if c.fsdp_ag_s:
                # Each layer's gathers and reduce-scatter hide behind that layer's compute.
                fwd = c.gemm_fwd_s + c.attention_fwd_s + c.elementwise_fwd_s
                fsdp_exposed += n * (
                    max(0.0, c.fsdp_ag_s - fwd) + max(0.0, c.fsdp_ag_s + c.fsdp_rs_s - 2 * fwd)
                )
        # Ring attention hides the K/V exchange behind the attention kernels.
        cp_exposed = max(0.0, cpc - at) if cpc else 0.0
        if rank == pp - 1:
            # Output layer (BF16) and the vocab-parallel cross entropy (~20 B per logit).
            g += 3 * 2 * t * (v / tp) * h / (peak_bf16 * out_eff * _shape(t, v / tp, h, eff.gemm_knee * hw.knee_scale_bf16**eff.knee_exponent))
            ew += t * (v / tp) * 20 / hbm
            if tp > 1:
                tpc += 2 * net.ring(t * h * a, tp, 1)
        # Pipeline p2p: activations forward and gradients backward per chunk boundary. The
        # stages are tp*cp*dp ranks apart, so the pipeline spans the job; it runs at its
        # slowest hop, which is NVLink only when the whole job shares one domain.
        ppc = 0.0
        if pp > 1:
            same = lay.gpus <= hw.nvlink_domain
            ppc = 2 * n_chunks * net.p2p(t * h * a / tp, same)
        per_stage.append(
            dict(
                gemm=g,
                attn=at,
                ew=ew,
                tp=tpc * tp_exposed,
                cp=cp_exposed,
                ep=epc * ep_exposed,
                pp=ppc * exposed,
                fsdp=fsdp_exposed,
                tp_total=tpc,
                cp_total=cpc,
                ep_total=epc,
                pp_total=ppc,
            )
        )
        seen[signature] = per_stage[-1]

    def mb_time(x: dict[str, float]) -> float:
        return x["gemm"] + x["attn"] + x["ew"] + x["tp"] + x["cp"] + x["ep"] + x["pp"] + x["fsdp"]

    slow = max(range(pp), key=lambda r: mb_time(per_stage[r]))
    st = per_stage[slow]
    t_mb = mb_time(st)
    bubble = (pp - 1) / vp * t_mb

    # Data parallel: gradient reduce-scatter and parameter all-gather of the local shard.
    held = rank_params(model, derived, slow)
    # The final norm (h parameters, negligible) stays out of the DP traffic and the optimizer,
    # as it was when the stored calibration was fitted.
    dense_local, expert_local = held.layers + held.embeddings, held.experts
    dp_total = dp_exposed = 0.0
    if lay.fsdp:
        replicas = _fsdp_replicas(derived)
        shard = (dense_local + expert_local) / lay.fsdp
        if replicas > 1:
            # The layers' gradients were all-reduced inside the backward (fsdp_rs_s); what is
            # left is the rest (embeddings, output layer, final norm), after the backward.
            layers = sum(kind_counts(model, derived.layers_per_chunk, pp)[slow].values())
            rest = max(0.0, shard - layers * layer_params(model, 0).total / tp / lay.fsdp)
            dp_total = 2 * net.ring(4 * rest, replicas, tp * cp * lay.fsdp)
            dp_exposed = dp_total
        opt_params = shard
    else:
        dpcp = derived.dp * cp
        rs = net.ring(a * dense_local, dpcp, tp) + net.ring(a * expert_local, derived.edp, derived.etp * lay.ep)
        # NeMo's FP8 precision (bf16_with_fp8_mixed) sets fp8_param_gather: the distributed
        # optimizer all-gathers the updated parameters in FP8, 1 byte each; fp32 runs, 4.
        w = 1 if dtype == "fp8" else a
        ag = net.ring(w * dense_local, dpcp, tp) + net.ring(w * expert_local, derived.edp, derived.etp * lay.ep)
        dp_total = rs + ag
        fwd_window = t_mb / 3
        dp_exposed = max(0.0, rs - 2 * fwd_window) + max(0.0, ag - fwd_window)
        opt_params = dense_local / dpcp + expert_local / derived.edp
    optimizer = opt_params * ADAM_BYTES_PER_PARAM / hbm

    return StepBreakdown(
        gemm_s=ga * st["gemm"],
        attention_s=ga * st["attn"],
        elementwise_s=ga * st["ew"],
        tp_comm_s=ga * st["tp"],
        cp_comm_s=ga * st["cp"],
        ep_comm_s=ga * st["ep"],
        pp_comm_s=ga * st["pp"],
        fsdp_comm_s=ga * st["fsdp"],
        bubble_s=bubble,
        dp_comm_s=dp_exposed,
        optimizer_s=optimizer,
        tp_comm_total_s=ga * st["tp_total"],
        cp_comm_total_s=ga * st["cp_total"],
        ep_comm_total_s=ga * st["ep_total"],
        pp_comm_total_s=ga * st["pp_total"],
        dp_comm_total_s=dp_total,
        microbatch_s=t_mb,
        slowest_stage=slow,
        recompute=recompute,
    )
