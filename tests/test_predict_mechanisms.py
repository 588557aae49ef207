"""The step-time model's MoE and GPU-generation mechanisms, each on its own: what it charges,
where, and that it changes nothing it should not (plan layer only, no torch)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from llmb.catalog import default_catalog
from llmb.errors import LlmbError
from llmb.plan.network import Net
from llmb.plan.predict import (Efficiency, _layer_cost, ceiling_ratio, expert_gemm_share, gemm_share, load_factor,
                               predict_step)
from llmb.plan.recipe import resolve

CAT = default_catalog()
BASE = Efficiency()


def _step(recipe, eff: Efficiency, recompute: str = "none"):
    return predict_step(recipe.model, recipe.derived, recipe.gpu, recipe.dtype, eff, recompute)


def test_hardware_table_states_the_generation_and_the_nvl72_domain():
    gb = CAT.gpu("gb200")
    assert (gb.arch, gb.nvlink_domain, gb.peak_tflops["bf16"], gb.peak_tflops["fp8"]) == ("blackwell", 72, 2450, 4900)
    assert (gb.hbm_bandwidth_gbps, gb.nvlink_gbps, gb.nic_gbps) == (8000, 900, 50)
    assert CAT.gpu("h100").arch == "hopper" and CAT.gpu("b200").arch == "blackwell"


def test_a_faster_gpu_pays_the_same_fixed_gemm_costs():
    """The knees stand for fixed per-tile, per-launch and per-expert costs, which take the
    same time on any GPU: on a GPU with twice H100's peaks (and the same share of them
    measured) the math takes half the time and the fixed costs do not shrink, so its GEMMs
    take exactly half of what H100's take with both knees doubled."""
    h = CAT.gpu("h100")
    twice = h.model_copy(update={
        "peak_tflops": {k: 2 * v for k, v in h.peak_tflops.items()},
        "achievable_tflops": {k: 2 * v for k, v in h.achievable_tflops.items()},
    })
    eff = replace(BASE, gemm_knee=300.0, expert_knee=64.0)
    doubled = replace(eff, gemm_knee=600.0, expert_knee=128.0)
    for workload, size, gpus in (("llama3.1", "70b", 64), ("grok1", "314b", 512)):
        for dtype in ("bf16", "fp8"):
            r = resolve(CAT, workload, size, dtype, gpus, release="25.05.02" if workload == "grok1" else None)
            fast = predict_step(r.model, r.derived, twice, dtype, eff).gemm_s
            slow = predict_step(r.model, r.derived, h, dtype, doubled).gemm_s
            assert fast == pytest.approx(slow / 2, rel=1e-9), (workload, dtype)
            # and not merely because nothing depends on the knee
            assert fast > predict_step(r.model, r.derived, twice, dtype, replace(eff, gemm_knee=1e-9)).gemm_s


def test_the_knee_exponent_scales_the_fixed_gemm_costs_with_the_peak():
    """knee_exponent a: the GEMM knee scales by (peak / H100's BF16 peak) ** a, so an FP8
    layer on H100 (peak ratio r = 1979 / 989) at knee k and exponent a costs what it costs at
    exponent 1 and knee k * r ** (a - 1); BF16 on H100 (ratio 1) does not depend on the
    exponent at all."""
    r8 = 1979 / 989
    for workload, size, gpus in (("llama3.1", "70b", 64), ("grok1", "314b", 512)):
        eight = resolve(CAT, workload, size, "fp8", gpus)
        sixteen = resolve(CAT, workload, size, "bf16", gpus)
        eff = replace(BASE, gemm_knee=300.0, knee_exponent=1.5)
        same = replace(eff, gemm_knee=300.0 * r8**0.5, knee_exponent=1.0)
        moe = eight.model.moe is not None

        def layer(r, e):
            return _layer_cost(r.model, r.derived, r.gpu, r.dtype, e, moe).gemm_fwd_s

        assert layer(eight, eff) == pytest.approx(layer(eight, same), rel=1e-9), workload
        assert layer(eight, eff) > layer(eight, replace(eff, knee_exponent=1.0))
        assert _step(sixteen, eff).gemm_s == pytest.approx(_step(sixteen, replace(eff, knee_exponent=0.3)).gemm_s,
                                                           rel=1e-12), workload


def test_gemm_share_is_what_a_layer_charges_its_gemms():
    """``gemm_share`` (what the GPU kit's GEMM-shape check compares a measurement with) is the
    share of peak the layer cost runs each GEMM at: a dense Llama layer's forward GEMM time is
    the sum over its four GEMMs (QKV, output projection, fused gate/up, down) of 2 m n k over
    the peak times that share, in BF16 and FP8, on H100 and GB200."""
    eff = replace(BASE, gemm_knee=300.0, knee_exponent=1.2, gemm_bf16=0.7, gemm_fp8=0.6)
    for gpu_type in ("h100", "gb200"):
        for dtype in ("bf16", "fp8"):
            r = resolve(CAT, "llama3.1", "70b", dtype, 64, gpu_type="h100")
            m, gpu, tp = r.model, CAT.gpu(gpu_type), r.derived.layout.tp
            t = r.derived.layout.mbs * m.seq_len / r.derived.layout.cp
            q, kv = m.heads * m.kv_channels, m.query_groups * m.kv_channels
            shapes = [(t, (q + 2 * kv) / tp, m.hidden), (t, m.hidden, q / tp), (t, 2 * m.ffn_hidden / tp, m.hidden),
                      (t, m.hidden, m.ffn_hidden / tp)]
            want = sum(2 * a * b * c / (gpu.peak_flops(dtype) * gemm_share(a, b, c, gpu, dtype, eff))
                       for a, b, c in shapes)
            got = _layer_cost(m, r.derived, gpu, dtype, eff, False).gemm_fwd_s
            assert got == pytest.approx(want, rel=1e-12), (gpu_type, dtype)
    # the shape matters: the same FLOPs in a thinner GEMM get a smaller share
    h = CAT.gpu("h100")
    assert gemm_share(2048, 65536, 6144, h, "bf16", eff) < gemm_share(8192, 16384, 6144, h, "bf16", eff) < 0.7


def test_the_flash_attn_backend_slows_the_attention_kernels_only():
    """A recipe that selects the flash-attn package (NVTE_FUSED_ATTN=0) runs its attention at
    ``attention_flash`` instead of cuDNN's ``attention``; GEMMs, element-wise work and the
    collectives do not change."""
    r = resolve(CAT, "grok1", "314b", "bf16", 512, release="25.02")
    assert r.attention_backend == "flash"
    eff = replace(BASE, attention=0.6, attention_flash=0.3)
    cudnn = predict_step(r.model, r.derived, r.gpu, "bf16", eff, "none", r.tp_comm_overlap, "cudnn")
    flash = predict_step(r.model, r.derived, r.gpu, "bf16", eff, "none", r.tp_comm_overlap, "flash")
    assert flash.attention_s == pytest.approx(2 * cudnn.attention_s, rel=1e-9)
    assert (flash.gemm_s, flash.elementwise_s) == (cudnn.gemm_s, cudnn.elementwise_s)
    assert flash.step_time_s > cudnn.step_time_s
    with pytest.raises(LlmbError, match="unknown attention backend"):
        predict_step(r.model, r.derived, r.gpu, "bf16", eff, attention_backend="fa3")


def test_the_nemo1_launchers_rows_select_flash_attn_and_the_others_cudnn():
    """dgxc-benchmarking's NeMo 1 launcher exports NVTE_FUSED_ATTN=0 for Grok-1 (v24.11.1 and
    v25.02 grok1/configure.sh) and Nemotron-4 340B (v24.11.1 nemotron/configure.sh, the
    seed's tables); NeMo 2's perf scripts export 1 (NeMo scripts/performance/utils.py)."""
    assert resolve(CAT, "grok1", "314b", "fp8", 64, release="24.11.1").attention_backend == "flash"
    assert resolve(CAT, "grok1", "314b", "bf16", 512, release="25.05.02").attention_backend == "cudnn"
    assert resolve(CAT, "grok1", "314b", "bf16", 256, gpu_type="gb200").attention_backend == "cudnn"
    assert resolve(CAT, "nemotron4", "340b", "bf16", 512).attention_backend == "flash"
    assert resolve(CAT, "nemotron4", "340b", "bf16", 256, release="25.05").attention_backend == "cudnn"
    for workload, size in (("llama3.1", "405b"), ("llama4-maverick", "400b"), ("llama2-maxtext", "70b")):
        assert resolve(CAT, workload, size, "bf16", 512).attention_backend == "cudnn", workload


def test_moe_layers_without_a_shared_expert_have_only_attentions_tp_traffic():
    """TP with sequence parallelism moves 10 collectives per dense layer, 5 of them the MLP's;
    a routed MoE block reaches its experts by the EP all-to-all (and the ETP gather) instead,
    while a shared expert is a TP-split MLP of its own."""
    grok = resolve(CAT, "grok1", "314b", "bf16", 512, release="25.05.02")
    dense_twin = grok.model.model_copy(update={"moe": None})
    moe_cost = _layer_cost(grok.model, grok.derived, grok.gpu, "bf16", BASE, True)
    dense_cost = _layer_cost(dense_twin, grok.derived, grok.gpu, "bf16", BASE, False)
    assert grok.layout.tp == 4 and moe_cost.tp_s == pytest.approx(dense_cost.tp_s / 2, rel=1e-12)
    mav = resolve(CAT, "llama4-maverick", "400b", "bf16", 512, gpu_type="h100")
    assert mav.model.moe.shared_experts and mav.layout.tp > 1
    dense_mav = mav.model.model_copy(update={"moe": None})
    assert _layer_cost(mav.model, mav.derived, mav.gpu, "bf16", BASE, True).tp_s == pytest.approx(
        _layer_cost(dense_mav, mav.derived, mav.gpu, "bf16", BASE, False).tp_s, rel=1e-12)


def test_measured_matmul_ceilings_are_below_peak_and_cited():
    """The hardware table's achievable_tflops are MAMF measurements (stas00/ml-engineering
    compute/accelerator/README.md @ 744d01e): below the datasheet peak, with their source."""
    measured = [(k, g) for k, g in CAT.gpus.items() if g.achievable_tflops]
    assert {k for k, _ in measured} >= {"h100", "gb200", "b200"}
    for key, g in measured:
        for dtype, tflops in g.achievable_tflops.items():
            assert 0.4 * g.peak_tflops[dtype] < tflops < g.peak_tflops[dtype], (key, dtype)
        assert "ml-engineering" in g.source and "MAMF" in g.source, key


def test_a_gpus_tensor_core_efficiency_follows_its_measured_ceiling():
    """GB200's ceiling is 1822 / 2450 of its BF16 peak against H100's 794.5 / 989, 3615.6 / 4900
    against 1402.6 / 1979 in FP8; H100 is the reference (1) and an unmeasured GPU keeps it."""
    gb, h = CAT.gpu("gb200"), CAT.gpu("h100")
    assert ceiling_ratio(gb, "bf16") == pytest.approx((1822 / 2450) / (794.5 / 989), rel=1e-12)
    assert ceiling_ratio(gb, "fp8") == pytest.approx((3615.6 / 4900) / (1402.6 / 1979), rel=1e-12)
    assert ceiling_ratio(h, "bf16") == ceiling_ratio(h, "fp8") == 1.0
    assert ceiling_ratio(CAT.gpu("h200"), "fp8") == 1.0
    ignore = replace(BASE, measured_ceiling=0.0)
    for dtype in ("bf16", "fp8"):
        r = resolve(CAT, "llama3.1", "405b", dtype, 128, "gb200")
        a, b = (_layer_cost(r.model, r.derived, r.gpu, dtype, e, False) for e in (BASE, ignore))
        assert b.gemm_fwd_s == pytest.approx(ceiling_ratio(gb, dtype) * a.gemm_fwd_s, rel=1e-9)
        # attention runs in BF16 whatever the GEMMs do
        assert b.attention_fwd_s == pytest.approx(ceiling_ratio(gb, "bf16") * a.attention_fwd_s, rel=1e-9)
        assert b.elementwise_fwd_s == pytest.approx(a.elementwise_fwd_s, rel=1e-12)
    h100 = resolve(CAT, "llama3.1", "405b", "bf16", 512)
    assert _step(h100, ignore).step_time_s == pytest.approx(_step(h100, BASE).step_time_s, rel=1e-12)
    assert Efficiency.roofline().measured_ceiling == 0.0  # the roofline is the datasheet's


def test_load_factor_is_the_expected_busiest_rank():
    eff = replace(BASE, expert_load_cv=0.3)
    assert load_factor(eff, 8, 1) == 1.0  # one rank holds every expert: no imbalance between ranks
    # 1 + cv * sqrt(2 ln EP / experts per rank)
    assert load_factor(eff, 8, 8) == pytest.approx(1 + 0.3 * math.sqrt(2 * math.log(8) / 1))
    assert load_factor(eff, 128, 64) == pytest.approx(1 + 0.3 * math.sqrt(2 * math.log(64) / 2))
    assert load_factor(eff, 8, 2) < load_factor(eff, 8, 4) < load_factor(eff, 8, 8)
    assert load_factor(replace(BASE, expert_load_cv=0.0), 128, 128) == 1.0


def _dropless(recipe):
    """The recipe with its capacity factor removed (dropless routing)."""
    moe = recipe.model.moe.model_copy(update={"capacity_factor": None})
    return replace(recipe, model=recipe.model.model_copy(update={"moe": moe}))


def test_router_skew_slows_moe_layers_only():
    skewed = replace(BASE, expert_load_cv=0.5)
    maverick = _dropless(resolve(CAT, "llama4-maverick", "400b", "bf16", 512, gpu_type="h100"))
    a, b = _step(maverick, BASE), _step(maverick, skewed)
    assert b.gemm_s > a.gemm_s and b.ep_comm_total_s > a.ep_comm_total_s and b.elementwise_s > a.elementwise_s
    dense = resolve(CAT, "llama3.1", "70b", "bf16", 64)
    assert _step(dense, skewed).step_time_s == _step(dense, BASE).step_time_s


def test_a_capacity_factor_bounds_the_busiest_expert_rank():
    """Grok-1's recipe drops tokens beyond capacity factor 1.0 (dgxc grok1_314b.yaml): no
    router skew makes its busiest EP rank take more than the even share; without the
    capacity factor the skew would."""
    skewed = replace(BASE, expert_load_cv=0.5)
    grok = resolve(CAT, "grok1", "314b", "bf16", 512, release="24.11.1")
    assert grok.model.moe.capacity_factor == 1.0
    assert _step(grok, skewed).step_time_s == _step(grok, BASE).step_time_s
    free = _dropless(grok)
    assert _step(free, skewed).step_time_s > _step(free, BASE).step_time_s


def test_no_catalog_recipe_is_dropless_so_no_published_row_informs_the_skew():
    """Both MoE recipes pad every expert to capacity factor 1.0: Grok-1's (dgxc grok1_314b.yaml;
    NeMo 2's script adds MegatronTokenDropCallback) and Maverick's (NeMo's
    pretrain_llama4_e128.py builds the performance-mode recipe, which adds the same callback,
    NeMo @ 7a8f1cc7). So the router skew moves no catalog prediction, and it is not fitted."""
    from llmb.plan import calibrate as cal

    assert "expert_load_cv" not in cal.BOUNDS
    skewed = replace(BASE, expert_load_cv=1.0)
    moe = [s for s in cal.samples(CAT) if s.moe]
    assert {s.workload for s in moe} == {"grok1", "llama4-maverick"}
    for s in moe:
        assert s.recipe.model.moe.capacity_factor == 1.0, s.label
        assert cal.predict_sample(s, skewed) == cal.predict_sample(s, BASE), s.label


def test_grouped_gemm_knee_charges_fewer_tokens_per_expert_more():
    # Grok-1's 8 experts over EP 2 (4 local experts, 2048 tokens each) and EP 8 (1 local
    # expert, 8192 tokens): the same FLOPs per GPU, but the per-expert fixed cost weighs 4x.
    knee = replace(BASE, expert_knee=1024.0)
    none = replace(BASE, expert_knee=1e-9)
    ep2 = resolve(CAT, "grok1", "314b", "bf16", 8)
    ep8 = resolve(CAT, "grok1", "314b", "bf16", 32)
    assert (ep2.layout.ep, ep8.layout.ep) == (2, 8)
    slow2 = _step(ep2, knee).gemm_s / _step(ep2, none).gemm_s
    slow8 = _step(ep8, knee).gemm_s / _step(ep8, none).gemm_s
    assert slow2 > slow8 > 1.0


def test_fp8_expert_efficiency_touches_fp8_moe_only():
    weak = replace(BASE, expert_fp8=0.5)
    for dtype, changes in (("fp8", True), ("bf16", False)):
        r = resolve(CAT, "grok1", "314b", dtype, 512)
        assert (_step(r, weak).gemm_s > _step(r, BASE).gemm_s) is changes, dtype
    dense = resolve(CAT, "llama3.1", "70b", "fp8", 64)
    assert _step(dense, weak).step_time_s == _step(dense, BASE).step_time_s


def test_all_to_all_stays_on_nvlink_inside_the_72_gpu_domain():
    gb, h = CAT.gpu("gb200"), CAT.gpu("h100")
    nb = 64e6
    inside = Net.of(gb, 1.0, 0.0).all_to_all(nb, 64, 1)
    # 63/64 of the bytes over GB200's 900 GB/s NVLink; on H100 56/64 of them over the 50 GB/s NIC
    assert inside == pytest.approx(nb * 63 / 64 / 900e9)
    assert Net.of(h, 1.0, 0.0).all_to_all(nb, 64, 1) == pytest.approx(nb * 56 / 64 / 50e9)
    # beyond the domain the NIC share takes over
    assert Net.of(gb, 1.0, 0.0).all_to_all(nb, 128, 1) == pytest.approx(nb * 56 / 128 / 50e9)


def test_an_all_to_all_pays_a_step_latency_per_peer():
    """NCCL has no all-to-all kernel: the caller sends to and receives from every peer in one
    group, so each peer costs a step latency (``step_s`` across the network, 3.4 / 14 of it
    over NVLink), on top of the bytes. At fixed bytes more peers cost more."""
    lat = Net(nvlink_bps=400e9, nic_bps=50e9, domain=8, step_s=14e-6)
    bw = Net(nvlink_bps=400e9, nic_bps=50e9, domain=8)
    # 16 ranks, 8 per domain: 8 peers across the network, 7 inside it.
    assert lat.all_to_all(16e9, 16, 1) - bw.all_to_all(16e9, 16, 1) == pytest.approx(14e-6 * (8 + 7 * 3.4 / 14))
    assert lat.all_to_all(0.0, 16, 1) == pytest.approx(14e-6 * (8 + 7 * 3.4 / 14))  # latency alone
    assert lat.all_to_all(1e6, 1, 1) == 0.0
    times = [lat.all_to_all(64e6, n, 1) for n in (8, 16, 64, 128)]
    assert all(a < b for a, b in zip(times, times[1:])), times


def test_a_moe_layer_pays_six_all_to_all_latencies():
    """Megatron-Core 0.12's dispatcher (the commit the 25.05 recipes install) exchanges the
    routed tokens and their router probabilities, and combines the tokens: three
    all-to-alls forward, three backward. Maverick on GB200 (EP 64 inside a 64-GPU domain, no
    ETP): the ring-step latency adds six in-domain latencies per peer to its EP time."""
    r = resolve(CAT, "llama4-maverick", "400b", "bf16", 128, gpu_type="gb200")
    assert (r.layout.ep, r.derived.etp) == (64, 1)
    slow = replace(BASE, ring_step_us=20.0)
    fast = replace(BASE, ring_step_us=0.0)
    a = _layer_cost(r.model, r.derived, r.gpu, "bf16", slow, True)
    b = _layer_cost(r.model, r.derived, r.gpu, "bf16", fast, True)
    assert a.ep_s - b.ep_s == pytest.approx(6 * 20e-6 * 63 * 3.4 / 14)
    dense = _layer_cost(r.model, r.derived, r.gpu, "bf16", slow, False)
    assert dense.ep_s == 0.0


def test_a_multi_rack_gb200_job_gets_its_slurm_segment_as_nvlink_domain():
    """NeMo's launcher asks Slurm for --segment = the largest divisor of the node count up to
    18 on 4-GPU nodes past 18 nodes (NVIDIA/NeMo scripts/performance/utils.py @ 7a8f1cc7,
    slurm_executor): every published GB200 run (32, 64, 128 nodes) is placed 16 nodes to a
    rack, so its NVLink domain is 64 GPUs. H100's domain is its node."""
    gb, h = CAT.gpu("gb200"), CAT.gpu("h100")
    assert gb.node_gpus == 4
    assert [gb.job_domain(n) for n in (8, 72, 128, 256, 512)] == [72, 72, 64, 64, 64]
    assert gb.job_domain(4 * 27) == 36  # 27 nodes: segments of 9
    assert [h.job_domain(n) for n in (8, 64, 2048)] == [8, 8, 8]


def test_a_pipeline_crossing_domains_runs_its_p2p_over_the_nic():
    """The stages of a pipeline are tp*cp*dp ranks apart and it runs at its slowest hop: on
    NVLink only if all its stages share one domain. Maverick on GB200 at 128 GPUs (PP 2, 64
    ranks apart, two 64-GPU segments) crosses as it does at 256, so its PP time is the same."""
    eff = replace(BASE, overlap=0.0)
    p128 = _step(resolve(CAT, "llama4-maverick", "400b", "bf16", 128, gpu_type="gb200"), eff)
    p256 = _step(resolve(CAT, "llama4-maverick", "400b", "bf16", 256, gpu_type="gb200"), eff)
    assert p128.pp_comm_s > 0 and p128.pp_comm_s == pytest.approx(p256.pp_comm_s, rel=1e-12)
    one = resolve(CAT, "llama4-maverick", "400b", "bf16", 128, gpu_type="gb200")
    inside = one.gpu.model_copy(update={"nvlink_domain": 144})  # both stages in one domain
    assert _step(replace(one, gpu=inside), eff).pp_comm_s < p128.pp_comm_s


def test_grok1_overlaps_its_tp_traffic_under_both_launchers():
    """Grok-1's NeMo 1 yaml says ub_tp_comm_overlap: false, but the configure.sh that launches
    it overrides model.ub_tp_comm_overlap=true (dgxc-benchmarking v24.11.1 and v25.02
    grok1/configure.sh); its NeMo 2 script turns tp_comm_overlap on (NeMo
    scripts/performance/llm/pretrain_grok1_314b.py). Every release's row keeps the default."""
    for release in ("24.11.1", "25.02", "25.05.01", "25.05.02"):
        assert resolve(CAT, "grok1", "314b", "bf16", 512, release=release).tp_comm_overlap, release


def test_a_recipe_without_tp_comm_overlap_exposes_all_its_tp_traffic():
    """A layout row with ``tp_comm_overlap: false`` exposes all its TP traffic; PP's overlap
    is not TP's."""
    old = resolve(CAT, "grok1", "314b", "bf16", 512, release="25.02")
    eff = replace(BASE, overlap=0.6)
    m, d, g = old.model, old.derived, old.gpu
    off = predict_step(m, d, g, "bf16", eff, "none", tp_overlap=False)
    on = predict_step(m, d, g, "bf16", eff, "none", tp_overlap=True)
    assert off.tp_comm_s == pytest.approx(off.tp_comm_total_s, rel=1e-12)
    assert on.tp_comm_s == pytest.approx(0.4 * on.tp_comm_total_s, rel=1e-9)
    assert on.pp_comm_s == pytest.approx(off.pp_comm_s, rel=1e-12)  # PP overlap is not TP's
    assert off.step_time_s > on.step_time_s


def test_ep_traffic_hides_only_behind_a_shared_expert():
    """Maverick's shared expert runs beside the dispatch (moe_shared_expert_overlap); Grok-1
    has none, so its all-to-alls are all exposed whatever the overlap fraction."""
    eff = replace(BASE, overlap=0.6)
    grok = _step(resolve(CAT, "grok1", "314b", "bf16", 512, release="25.02"), eff)
    assert grok.ep_comm_total_s > 0 and grok.ep_comm_s == pytest.approx(grok.ep_comm_total_s, rel=1e-12)
    mav = _step(resolve(CAT, "llama4-maverick", "400b", "bf16", 512, "h100"), eff)
    assert mav.ep_comm_total_s > 0 and mav.ep_comm_s == pytest.approx(0.4 * mav.ep_comm_total_s, rel=1e-9)


def test_predict_says_which_attention_kernels_it_charged(capsys):
    from llmb.cli import main

    assert main(["predict", "grok1", "-s", "314b", "-n", "512", "--release", "25.02"]) == 0
    assert "attention=flash-attn" in capsys.readouterr().out
    assert main(["predict", "grok1", "-s", "314b", "-n", "512", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["attention_backend"] == "cudnn"
    assert main(["predict", "grok1", "-s", "314b", "-n", "512"]) == 0
    assert "flash-attn" not in capsys.readouterr().out


def test_an_expert_gemm_pays_its_fixed_cost_on_top_of_the_dense_shape():
    """``expert_gemm_share`` (what the GPU kit's expert-GEMM check compares with) is a dense
    GEMM's share times the per-expert factor: half of it at as many tokens as the expert knee
    (scaled by the peak), nearly all of it far above; FP8 also pays ``expert_fp8``."""
    eff = replace(BASE, expert_knee=100.0, expert_fp8=0.8)
    for gpu_type, dtype in (("h100", "bf16"), ("h100", "fp8"), ("gb200", "bf16")):
        gpu = CAT.gpu(gpu_type)
        fp8 = 0.8 if dtype == "fp8" else 1.0
        knee = 100.0 * gpu.peak_flops(dtype) / CAT.gpu("h100").peak_flops("bf16")  # 100, ~200, ~248
        dense = gemm_share(knee, 16384, 5120, gpu, dtype, eff)
        assert expert_gemm_share(knee, 16384, 5120, gpu, dtype, eff) == pytest.approx(dense * 0.5 * fp8)
        big = 1e7
        assert expert_gemm_share(big, 16384, 5120, gpu, dtype, eff) == pytest.approx(
            gemm_share(big, 16384, 5120, gpu, dtype, eff) * fp8, rel=1e-4)


def _gemm_shapes_benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "predict_gemm_shapes.py"
    spec = importlib.util.spec_from_file_location("predict_gemm_shapes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_calibrated_gemm_knee_is_where_measured_gemms_put_it():
    """The GEMM knee is fitted on published step times only; its scaling with the peak is
    held at 1. XLA's table of measured GEMMs (OpenXLA's matmul_interpolator_data.h as vendored
    in tensorflow/tensorflow @ a305421c; tests/data/README.md) checks both independently.
    Relative to 4096^3, the calibrated model's H100 BF16 share of the 24 shapes with every
    dimension >= 2048 is within 5 % rms and 12 % at worst, and within 10 % rms on the 54 of
    training size, each less than without a knee (6.0 / 19.6 % and 15.5 %). On every GPU and
    dtype of the table the model's knee is within a factor 2 of the knee that fits the
    measurements best, and the exponent the best knees imply (B200 BF16 and FP8 against H100
    BF16) is within 0.2 of the model's."""
    from llmb.plan.calibrate import stored_efficiency

    bench = _gemm_shapes_benchmark()
    tables, eff = bench.measured(), stored_efficiency()
    assert {k: len(v) for k, v in tables.items()} == {("h100", "bf16"): 375, ("b200", "bf16"): 375, ("b200", "fp8"): 375}
    assert tables["h100", "bf16"][1, 4096, 4096, 4096] == 780193877565849
    h100 = tables["h100", "bf16"]
    big = bench.summary(bench.errors(h100, "h100", "bf16", eff, "dims >= 2048"))
    training = bench.summary(bench.errors(h100, "h100", "bf16", eff, "training"))
    assert big["shapes"] == 24 and training["shapes"] == 54
    assert big["rms_pct"] <= 5 and big["max_pct"] <= 12 and training["rms_pct"] <= 10, (big, training)
    flat = replace(eff, gemm_knee=0.0)
    flat_big = bench.summary(bench.errors(h100, "h100", "bf16", flat, "dims >= 2048"))
    flat_training = bench.summary(bench.errors(h100, "h100", "bf16", flat, "training"))
    assert flat_big["rms_pct"] > big["rms_pct"] and flat_big["max_pct"] > big["max_pct"]
    assert flat_training["rms_pct"] > 1.5 * training["rms_pct"]
    for (gpu_type, dtype), table in tables.items():
        ratio = bench.model_knee(gpu_type, dtype, eff) / bench.best_knee(table, gpu_type, dtype, "dims >= 2048")
        assert 0.5 <= ratio <= 2, (gpu_type, dtype, ratio)
    for dtype in ("bf16", "fp8"):
        for cls in ("dims >= 2048", "training"):
            assert abs(bench.implied_exponent(tables, dtype, cls) - eff.knee_exponent) <= 0.2, (dtype, cls)
