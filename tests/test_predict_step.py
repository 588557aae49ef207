"""Step-time model: hand-checked roofline numbers, cost models, monotonicity."""

from dataclasses import replace

import pytest

from llmb.catalog import default_catalog
from llmb.catalog.schema import ModelSpec
from llmb.plan.calibrate import stored_efficiency
from llmb.plan.layout import Layout, derive
from llmb.plan.network import Net
from llmb.plan.predict import Efficiency, predict_step
from llmb.plan.forecast import forecast
from llmb.plan.search import search_layouts
from llmb.plan.recipe import resolve
from llmb.plan.shapes import RECOMPUTE_LEVELS

CAT = default_catalog()
H100 = CAT.gpus["h100"]

TINY = ModelSpec(
    family="llama",
    layers=2,
    hidden=1024,
    ffn_hidden=4096,
    heads=8,
    query_groups=8,
    vocab=1000,
    seq_len=1024,
    activation="squared_relu",
    norm="rmsnorm",
)


def test_roofline_compute_hand_checked():
    d = derive(Layout(gpus=1, mbs=1, gbs=1), TINY)
    b = predict_step(TINY, d, H100, "bf16", Efficiency.roofline(), "none")
    # Forward GEMM FLOP per layer, 1024 tokens: QKV 2*1024*3072*1024 = 6,442,450,944;
    # out-proj 2*1024*1024*1024 = 2,147,483,648; FC1 and FC2 2*1024*4096*1024 each
    # = 8,589,934,592. Sum 25,769,803,776; x3 (fwd + bwd) x 2 layers = 154,618,822,656;
    # output layer 3*2*1024*1000*1024 = 6,291,456,000. Total 160,910,278,656 FLOP at 989e12.
    assert b.gemm_s == pytest.approx(160_910_278_656 / 989e12, rel=1e-12)
    # Causal attention forward 2*1024*1024*1024 = 2,147,483,648 FLOP per layer, x3.5 x2 layers.
    assert b.attention_s == pytest.approx(2 * 3.5 * 2_147_483_648 / 989e12, rel=1e-12)
    # One GPU: no communication, no bubble.
    assert b.tp_comm_s == b.cp_comm_s == b.pp_comm_s == b.dp_comm_s == b.bubble_s == 0
    assert b.step_time_s == pytest.approx(b.gemm_s + b.attention_s + b.elementwise_s + b.optimizer_s)


def test_ring_and_all_to_all_cost_models():
    net = Net(nvlink_bps=400e9, nic_bps=50e9, domain=8)
    # 8 GPUs in one NVLink domain: (n-1)/n of the tensor over NVLink.
    assert net.ring(8e9, 8, 1) == pytest.approx(8e9 * 7 / 8 / 400e9)
    # 16 GPUs: 7/8 inside the domain, then 1/8 of the data across 2 domains over the NIC.
    assert net.ring(8e9, 16, 1) == pytest.approx(8e9 * 7 / 8 / 400e9 + 1e9 * 1 / 2 / 50e9)
    # A group strided by 8 has one member per domain: everything over the NIC.
    assert net.ring(8e9, 4, 8) == pytest.approx(8e9 * 3 / 4 / 50e9)
    # All-to-all over 16 ranks, 8 per domain: 8/16 of the data leaves the domain.
    assert net.all_to_all(16e9, 16, 1) == pytest.approx(16e9 * 8 / 16 / 50e9)


def test_bubble_is_pp_minus_one_over_vp_microbatches():
    r = resolve(CAT, "llama3.1", "70b", "bf16", 64)  # PP4 VP5
    b = predict_step(r.model, r.derived, r.gpu, "bf16", stored_efficiency(), "none")
    assert b.bubble_s == pytest.approx(3 / 5 * b.microbatch_s)
    no_vp = derive(replace(r.layout, vp=None), r.model)
    b1 = predict_step(r.model, no_vp, r.gpu, "bf16", stored_efficiency(), "none")
    assert b1.bubble_s == pytest.approx(3 * b1.microbatch_s)
    assert b1.bubble_s > b.bubble_s


def test_more_recompute_means_more_time():
    r = resolve(CAT, "llama3.1", "70b", "bf16", 64)
    times = [
        predict_step(r.model, r.derived, r.gpu, "bf16", stored_efficiency(), level).step_time_s
        for level in RECOMPUTE_LEVELS
    ]
    # Levels are ordered by memory; time follows, except that save_qkv (JAX remat: XLA drops
    # the dead FC2 recompute) can undercut Megatron's mlp recompute (FC1 and FC2 redone).
    t = dict(zip(RECOMPUTE_LEVELS, times))
    torch_style = [t["none"], t["selective"], t["mlp"], t["full"]]
    assert all(a < b for a, b in zip(torch_style, torch_style[1:])), times
    assert t["selective"] < t["save_qkv"] < t["full"], times


@pytest.mark.parametrize(("workload", "size", "dtype"), [("llama3.1", "8b", "bf16"), ("llama3.1", "70b", "fp8")])
def test_more_gpus_at_fixed_gbs_means_a_shorter_step(workload, size, dtype):
    r = resolve(CAT, workload, size, dtype)
    eff = stored_efficiency()
    steps = []
    for factor in (1, 2, 4):
        lay = replace(r.layout, gpus=r.layout.gpus * factor)  # same GBS, more DP
        steps.append(predict_step(r.model, derive(lay, r.model), r.gpu, dtype, eff, "none").step_time_s)
    assert steps[0] > steps[1] > steps[2], steps


def test_fp8_is_faster_than_bf16_but_attention_stays_bf16():
    eff = stored_efficiency()
    rb = resolve(CAT, "llama3.1", "8b", "bf16", 8)
    r8 = resolve(CAT, "llama3.1", "8b", "fp8", 8)
    bb = predict_step(rb.model, rb.derived, rb.gpu, "bf16", eff, "none")
    b8 = predict_step(r8.model, r8.derived, r8.gpu, "fp8", eff, "none")
    assert b8.gemm_s < bb.gemm_s
    assert b8.attention_s == pytest.approx(bb.attention_s)
    assert b8.elementwise_s > bb.elementwise_s  # FP8 casts and transposes


def test_forecast_auto_recompute_fits_and_band_brackets_the_step():
    r = resolve(CAT, "nemotron4", "340b", "bf16", 256)
    f = forecast(r, stored_efficiency(), "auto", (-0.1, 0.2))
    assert f.memory.fits
    lo, hi = f.band_s
    assert lo == pytest.approx(f.step_time_s / 1.2) and hi == pytest.approx(f.step_time_s / 0.9)
    assert f.metrics.tokens_per_s == pytest.approx(4096 * 64 / f.step_time_s)


def test_search_ranks_fitting_layouts_and_includes_the_recipe():
    r = resolve(CAT, "llama3.1", "8b", "bf16", 16)
    res = search_layouts(r, stored_efficiency(), top=5)
    assert 0 < res.fitting <= res.valid <= res.tried
    steps = [f.step_time_s for f in res.ranked]
    assert steps == sorted(steps)
    assert all(f.memory.fits for f in res.ranked)
    assert all(f.recipe.layout.gbs == 256 and f.recipe.layout.gpus == 16 for f in res.ranked)
    # The recipe's own layout is among the candidates, so the winner is at least as fast.
    assert res.ranked[0].step_time_s <= res.recipe_forecast.step_time_s + 1e-9


def test_elementwise_bytes_hand_checked():
    # TINY, BF16 (2 B), one GPU, 1024 tokens, squared ReLU; per token and layer:
    # forward: 2 norms x 2h + 2 residual adds x 3h + RoPE on Q and K 2(q + kv) + act 2f
    #   = 2*(2*2*1024) + 2*(3*2*1024) + 2*2*(1024 + 1024) + 2*2*4096 = 45,056 B;
    # backward: 2 norms x 3h + 2 adds x 3h + RoPE 2(q + kv) + act 3f
    #   = 2*(3*2*1024) + 2*(3*2*1024) + 2*2*2048 + 3*2*4096 = 57,344 B.
    # x 1024 tokens x 2 layers = 209,715,200 B, plus the cross entropy 20 B per logit
    # (1024 x 1000 x 20 = 20,480,000 B): 230,195,200 B at 3350 GB/s.
    d = derive(Layout(gpus=1, mbs=1, gbs=1), TINY)
    b = predict_step(TINY, d, H100, "bf16", Efficiency.roofline(), "none")
    assert b.elementwise_s == pytest.approx(230_195_200 / 3350e9, rel=1e-12)
    # Full recompute runs the forward element-wise work once more.
    bf = predict_step(TINY, d, H100, "bf16", Efficiency.roofline(), "full")
    assert bf.elementwise_s - b.elementwise_s == pytest.approx(45_056 * 1024 * 2 / 3350e9, rel=1e-12)


def test_fp8_casts_hand_checked():
    # FP8 adds one cast-transpose (read 2 B, write 1 + 1 B = 4 B per element) of the
    # attention-output and FC2 inputs forward (q + f = 5120 elements per token) and of the
    # four output gradients backward (q + 2 kv + h + f + h = 1024 + 2048 + 1024 + 4096 + 1024
    # = 9216): 4 x 14,336 x 1024 tokens x 2 layers = 117,440,512 B more than BF16.
    d = derive(Layout(gpus=1, mbs=1, gbs=1), TINY)
    roof = Efficiency.roofline()
    b16 = predict_step(TINY, d, H100, "bf16", roof, "none")
    b8 = predict_step(TINY, d, H100, "fp8", roof, "none")
    assert b8.elementwise_s - b16.elementwise_s == pytest.approx(117_440_512 / 3350e9, rel=1e-12)


def test_fp8_tp_gathers_move_half_the_bytes():
    # TP with sequence parallelism: 4 reduce-scatters (BF16) + 6 all-gathers (FP8 in FP8 runs)
    # per layer: 10 ring units in BF16, 4 + 6/2 = 7 in FP8.
    model = TINY.model_copy(update={"layers": 1, "vocab": 8})
    d = derive(Layout(gpus=8, tp=8, mbs=1, gbs=1), model)
    roof = Efficiency.roofline()
    b16 = predict_step(model, d, H100, "bf16", roof, "none")
    b8 = predict_step(model, d, H100, "fp8", roof, "none")
    ring = Net(450e9, 50e9, 8).ring(1024 * 1024 * 2, 8, 1)
    last = 2 * ring  # the output layer's gather and reduce-scatter (last stage)
    assert b16.tp_comm_total_s == pytest.approx(10 * ring + last)
    assert b8.tp_comm_total_s == pytest.approx(7 * ring + last)


def test_recipes_predict_the_recompute_their_catalog_rows_state():
    from llmb.plan.forecast import stated_recompute

    maxtext = resolve(CAT, "llama2-maxtext", "70b", "bf16", 512)
    assert stated_recompute(maxtext) == "save_qkv"  # remat_policy=save_qkv_proj
    assert forecast(maxtext, stored_efficiency()).breakdown.recompute == "save_qkv"
    nemo = resolve(CAT, "llama3.1", "8b", "fp8", 8)
    assert forecast(nemo, stored_efficiency()).breakdown.recompute == "none"
    # Weak-scaled past the table: the level every row agrees on.
    assert stated_recompute(resolve(CAT, "llama3.1", "70b", "bf16", 4096)) == "none"
    # An overridden layout is no longer the recipe's: the lightest level that fits.
    assert stated_recompute(resolve(CAT, "llama3.1", "70b", "bf16", 64, overrides={"tp": 8})) is None
    # Nemotron's seed does not say: auto.
    assert stated_recompute(resolve(CAT, "nemotron4", "340b", "bf16", 256)) is None


def test_knee_scales_with_the_dtype_peak():
    # FP8 GEMMs need twice the size for the same fraction of their (twice as high) peak.
    eff = replace(Efficiency.roofline(), gemm_knee=512.0)
    model = TINY.model_copy(update={"layers": 1})
    d = derive(Layout(gpus=1, mbs=1, gbs=1), model)
    f = lambda x, k: x / (x + k)  # noqa: E731
    b8 = predict_step(model, d, H100, "fp8", eff, "none")
    # Layer GEMMs in FP8 at knee 512 x 1979 / 989 (fwd FLOP as in the roofline test, one
    # layer), the output layer in BF16 at knee 512.
    k8 = 512 * 1979 / 989
    layer = 3 * (
        2 * 1024 * 3072 * 1024 / f(1024, k8) ** 2 / f(3072, k8)
        + 2 * 1024 * 1024 * 1024 / f(1024, k8) ** 3
        + 2 * (2 * 1024 * 4096 * 1024) / f(1024, k8) ** 2 / f(4096, k8)
    ) / 1979e12
    out = 3 * 2 * 1024 * 1000 * 1024 / (f(1024, 512) ** 2 * f(1000, 512)) / 989e12
    assert b8.gemm_s == pytest.approx(layer + out, rel=1e-9)


def test_save_qkv_recomputes_neither_qkv_nor_the_dead_fc2():
    # JAX remat (save_qkv): the backward recomputes the layer's forward except the saved QKV
    # projection and FC2, whose output XLA drops as dead code. TINY, roofline: per layer the
    # out-projection 2*1024*1024*1024 = 2,147,483,648 and FC1 2*1024*4096*1024 =
    # 8,589,934,592 FLOP are redone, x 2 layers = 21,474,836,480 FLOP at 989e12.
    d = derive(Layout(gpus=1, mbs=1, gbs=1), TINY)
    none = predict_step(TINY, d, H100, "bf16", Efficiency.roofline(), "none")
    save = predict_step(TINY, d, H100, "bf16", Efficiency.roofline(), "save_qkv")
    assert save.gemm_s - none.gemm_s == pytest.approx(21_474_836_480 / 989e12, rel=1e-9)
    full = predict_step(TINY, d, H100, "bf16", Efficiency.roofline(), "full")
    assert save.gemm_s < full.gemm_s  # torch-style full recompute reruns every GEMM


def test_ring_latency_grows_with_the_group():
    # NCCL's latency model: size - 1 ring steps, (domains - 1) of them across the network at
    # step_s, the rest over NVLink at 3.4 / 14 of it. 16 GPUs in 2 domains: 1 network step,
    # 14 NVLink steps: 14e-6 + 14 x 3.4e-6 = 61.6 us on top of the bandwidth term.
    lat = Net(nvlink_bps=400e9, nic_bps=50e9, domain=8, step_s=14e-6)
    bw = Net(nvlink_bps=400e9, nic_bps=50e9, domain=8)
    assert lat.ring(8e9, 16, 1) - bw.ring(8e9, 16, 1) == pytest.approx(61.6e-6)
    # At fixed bytes, a larger FSDP group costs more: bandwidth ((outer - 1) / outer) and steps.
    times = [lat.ring(1.7e9, n, 1) for n in (8, 64, 128, 256, 512)]
    assert all(a < b for a, b in zip(times, times[1:])), times
    # The FSDP exposed time of MaxText's FP8 recipe does not fall as its group grows.
    eff = stored_efficiency()
    steps = [forecast(resolve(CAT, "llama2-maxtext", "70b", "fp8", n), eff).breakdown for n in (64, 128, 256)]
    assert steps[0].fsdp_comm_s <= steps[1].fsdp_comm_s <= steps[2].fsdp_comm_s


def test_fsdp_replica_all_reduce_runs_per_layer_inside_the_backward():
    # MaxText 512 GPUs = FSDP 128 x 4 replicas: each layer's gradient shard is all-reduced
    # across the replicas with its reduce-scatter (hidden in the backward); only the
    # embeddings' and the output layer's gradients are all-reduced after the backward.
    eff = stored_efficiency()
    at128 = forecast(resolve(CAT, "llama2-maxtext", "70b", "bf16", 128), eff).breakdown
    at512 = forecast(resolve(CAT, "llama2-maxtext", "70b", "bf16", 512), eff).breakdown
    r = resolve(CAT, "llama2-maxtext", "70b", "bf16", 512)
    emb = 2 * r.model.vocab * r.model.hidden / 128  # input and output embeddings, FSDP shard
    net = Net(H100.nvlink_gbps * 1e9 * eff.link, H100.nic_gbps * 1e9 * eff.link, 8, eff.ring_step_us * 1e-6)
    # Plus the final norm's shard (8192 / 128 weights): well under 0.1 % of the embeddings.
    assert at512.dp_comm_s == pytest.approx(2 * net.ring(4 * emb, 4, 128), rel=1e-3)
    assert at512.dp_comm_s < 0.01 * at512.step_time_s
    assert at128.dp_comm_s == 0
