"""Memory model: hand-checked numbers, the seed facts, and monotonicity."""

from dataclasses import replace

import pytest

from llmb.catalog import default_catalog
from llmb.plan.layout import derive
from llmb.plan.memory import (
    GIB,
    checkpoint_bytes,
    estimate_memory,
    layer_activation_bytes_per_token,
)
from llmb.plan.recipe import resolve
from llmb.plan.shapes import RECOMPUTE_LEVELS, param_count

CAT = default_catalog()


def _recipe(*args, **kw):
    return resolve(CAT, *args, **kw)


def test_llama31_8b_static_state_matches_the_log_allocation():
    r = _recipe("llama3.1", "8b", "bf16", 8)
    # Hand count: embedding + output 2 x 128256 x 4096 = 1,050,673,152; per layer attention
    # 2*4096*4096 + 2*4096*1024 = 41,943,040, MLP 3*4096*14336 = 176,160,768, norms 8,192
    # -> 218,112,000 x 32 = 6,979,584,000; final norm 4,096. Total 8,030,261,248.
    assert param_count(r.model).total == 8_030_261_248
    mem = estimate_memory(r.model, r.derived, r.gpu, "bf16", "none")
    w = mem.worst
    # bf16 weights 2 B + bf16 grads 2 B + 12 B optimizer / (DP 4 x CP 2) = 5.5 B/param.
    assert w.static_bytes == pytest.approx(5.5 * 8_030_261_248)
    # The seed's log line: memory_allocated 44,271,689,728 bytes after a step.
    assert w.static_bytes == pytest.approx(44_271_689_728, rel=0.01)


def test_fp32_static_state_has_no_separate_main_copy():
    r = _recipe("llama3.1", "8b", "bf16", 8)
    w = estimate_memory(r.model, r.derived, r.gpu, "fp32", "none").worst
    # fp32 weights 4 B + fp32 grads 4 B + Adam m and v 8 B / (DP 4 x CP 2) = 9 B/param.
    assert w.static_bytes == pytest.approx(9 * 8_030_261_248)


def test_llama31_8b_activations_hand_checked():
    r = _recipe("llama3.1", "8b", "bf16", 8)
    # Per token per layer (TP1, bf16): attention 2h + 2h + 2(q + 2kv) + 2q + 4*heads
    # = 8192 + 8192 + 12288 + 8192 + 128 = 36,992; MLP 2h + 2h + 2*2F + 2F
    # = 8192 + 8192 + 57,344 + 28,672 = 102,400. Sum 139,392 bytes.
    per_token = layer_activation_bytes_per_token(r.model, r.derived, 0, "bf16", "none")
    assert per_token == 139_392
    mem = estimate_memory(r.model, r.derived, r.gpu, "bf16", "none")
    # One micro-batch in flight (PP 1) of 8192 / CP 2 = 4096 tokens through 32 layers.
    assert mem.worst.activations_bytes == 139_392 * 4096 * 32
    # Logits: 4096 tokens x 128256 x 10 bytes.
    assert mem.worst.logits_bytes == 4096 * 128_256 * 10


def test_llama31_8b_peak_close_to_the_logged_peak_and_fits():
    r = _recipe("llama3.1", "8b", "bf16", 8)
    mem = estimate_memory(r.model, r.derived, r.gpu, "bf16", "none")
    # peak_memory_usage: 70,833,405,952 in the seed's log line; the model is ~4 % low.
    assert mem.peak_allocated_bytes == pytest.approx(70_833_405_952, rel=0.06)
    assert mem.fits


def test_llama31_8b_does_not_fit_on_fewer_gpus_as_published():
    r = _recipe("llama3.1", "8b", "bf16", 8)
    for gpus in (4, 2):
        lay = replace(r.layout, gpus=gpus, gbs=16 * gpus)  # the recipe's weak scaling
        mem = estimate_memory(r.model, derive(lay, r.model), r.gpu, "bf16", "none")
        assert not mem.fits, gpus
    # Two GPUs do not fit even with full recomputation.
    lay = replace(r.layout, gpus=2, gbs=32)
    assert not estimate_memory(r.model, derive(lay, r.model), r.gpu, "bf16", "full").fits


@pytest.mark.parametrize(
    ("size", "published_gib"), [("8b", 105), ("70b", 920), ("405b", 5.2 * 1024)]
)
def test_checkpoint_sizes_match_the_seed(size, published_gib):
    r = _recipe("llama3.1", size)
    # 14 bytes per parameter (bf16 weights + fp32 main weights, Adam m and v); the seed's
    # "GB"/"TB" are binary units: 8b 112.4e9 B = 104.7 GiB.
    assert checkpoint_bytes(r.model) / GIB == pytest.approx(published_gib, rel=0.03)


def test_more_tp_means_less_weight_memory_per_gpu():
    # Same PP/CP/VP (the 70b recipe's PP4 CP2 VP5), only TP grows.
    r = _recipe("llama3.1", "70b", "bf16", 64)
    w = [
        estimate_memory(r.model, derive(replace(r.layout, tp=tp), r.model), r.gpu, "bf16").worst.weights_bytes
        for tp in (1, 2, 4, 8)
    ]
    assert w[0] > w[1] > w[2] > w[3]


@pytest.mark.parametrize(
    "args",
    [
        ("llama3.1", "70b", "bf16", 64),
        ("nemotron4", "340b", "fp8", 256),
        ("llama4-maverick", "400b", "bf16", 128),
        ("llama2-maxtext", "70b", "bf16", 128),
    ],
)
def test_more_recompute_means_less_activation_memory(args):
    r = _recipe(*args)
    acts = [
        estimate_memory(r.model, r.derived, r.gpu, r.dtype, level).worst.activations_bytes
        for level in RECOMPUTE_LEVELS
    ]
    assert all(a > b for a, b in zip(acts, acts[1:])), acts


def test_interleaving_keeps_more_chunks_in_flight_on_the_first_rank():
    r = _recipe("llama3.1", "70b", "bf16", 64)  # PP 4, VP 5, GA 64
    mem = estimate_memory(r.model, r.derived, r.gpu, "bf16")
    # Megatron's warm-up on rank 0: 2*(PP-1) + (VP-1)*PP + 1 = 6 + 16 + 1 = 23 chunks.
    assert mem.stages[0].in_flight == 23
    assert mem.stages[-1].in_flight == 2 * 0 + 4 * 4 + 1
    assert mem.worst.rank == 0 or mem.stages[0].activations_bytes > mem.stages[-1].activations_bytes


def test_fp8_weights_and_fsdp_sharding():
    r8 = _recipe("llama3.1", "8b", "fp8", 8)
    rb = _recipe("llama3.1", "8b", "bf16", 8)
    m8 = estimate_memory(r8.model, r8.derived, r8.gpu, "fp8")
    mb = estimate_memory(rb.model, rb.derived, rb.gpu, "bf16")
    # fp8_param_gather: an FP8 GEMM weight (1 B) and its FP8 transpose (1 B) replace the bf16
    # copy (2 B), so the weights take the same bytes as in BF16.
    assert m8.worst.weights_bytes == pytest.approx(mb.worst.weights_bytes)
    assert m8.worst.activations_bytes < mb.worst.activations_bytes  # FP8 GEMM inputs saved
    small = _recipe("llama2-maxtext", "70b", "bf16", 64)
    big = _recipe("llama2-maxtext", "70b", "bf16", 256)
    # FSDP 64 -> 256: the sharded state shrinks 4x.
    s64 = estimate_memory(small.model, small.derived, small.gpu, "bf16").worst.optimizer_bytes
    s256 = estimate_memory(big.model, big.derived, big.gpu, "bf16").worst.optimizer_bytes
    assert s64 == pytest.approx(4 * s256)


def test_nemotron4_340b_does_not_fit_below_128_gpus_as_published():
    r = _recipe("nemotron4", "340b", "bf16", 128)
    assert any(
        estimate_memory(r.model, r.derived, r.gpu, "bf16", level).fits for level in RECOMPUTE_LEVELS
    )
    half = derive(replace(r.layout, gpus=64, gbs=16), r.model)  # TP8 PP8 leave DP 1
    for level in RECOMPUTE_LEVELS:
        assert not estimate_memory(r.model, half, r.gpu, "bf16", level).fits, level


@pytest.mark.parametrize(
    ("workload", "size", "dtype", "gpus"),
    [("llama3.1", "405b", "bf16", 512), ("llama3.1", "70b", "fp8", 64), ("nemotron4", "340b", "bf16", 128), ("llama4-maverick", "400b", "bf16", 128)],
)
def test_worst_only_finds_the_same_worst_rank(workload, size, dtype, gpus):
    r = _recipe(workload, size, dtype, gpus)
    for level in RECOMPUTE_LEVELS:
        full = estimate_memory(r.model, r.derived, r.gpu, dtype, level)
        fast = estimate_memory(r.model, r.derived, r.gpu, dtype, level, worst_only=True)
        assert fast.worst == full.worst and fast.fits == full.fits
        assert len(fast.stages) <= len(full.stages)
