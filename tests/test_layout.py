"""Layout algebra: derived sizes, constraints (one line each, naming the numbers), weak scaling."""

from __future__ import annotations

import pytest

from llmb.errors import LayoutError, LlmbError
from llmb.plan import Layout, derive, resolve


@pytest.fixture
def llama8b(catalog):
    return catalog.workload("llama3.1").sizes["8b"].model


@pytest.fixture
def maverick(catalog):
    return catalog.workload("llama4").sizes["400b"].model


def test_derive_basic(llama8b):
    d = derive(Layout(gpus=16, tp=2, pp=2, cp=2, mbs=1, gbs=64), llama8b)
    assert (d.dp, d.ga, d.model_parallel, d.layers_per_stage) == (2, 32, 8, (16, 16))


def test_derive_moe_expert_data_parallel(maverick):
    d = derive(Layout(gpus=256, pp=2, ep=64, etp=1, vp=12, mbs=1, gbs=2048), maverick)
    assert (d.dp, d.ga, d.edp) == (128, 16, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(gpus=12, cp=8, gbs=128), r"GPUs \(12\) must be divisible by TP\*CP\*PP = 1\*8\*1 = 8"),
        (dict(gpus=8, cp=2, gbs=102), r"GBS \(102\) must be divisible by MBS\*DP = 1\*4 = 4"),
        (dict(gpus=64, tp=64, gbs=64), r"attention heads \(32\) must be divisible by TP \(64\)"),
        (dict(gpus=48, tp=3, gbs=48), r"attention heads \(32\) must be divisible by TP \(3\)"),
        (dict(gpus=24, pp=3, gbs=24), r"layers \(32\) must be divisible by PP\*VP = 3\*1 = 3"),
        (dict(gpus=16, pp=4, vp=3, gbs=64), r"layers \(32\) must be divisible by PP\*VP = 4\*3 = 12"),
        (dict(gpus=16, pp=4, vp=2, gbs=24), r"GA \(6\) must be divisible by PP \(4\)"),
        (dict(gpus=8, ep=2, gbs=8), r"EP \(2\) needs a mixture-of-experts model"),
        (dict(gpus=8, fsdp=3, gbs=8), r"DP \(8\) must be divisible by the FSDP group size \(3\)"),
        (dict(gpus=0, gbs=8), r"GPUs must be positive, got 0"),
        (dict(gpus=8, tp=-2, gbs=8), r"TP must be positive, got -2"),
        (dict(gpus=8, mbs=1.5, gbs=8), r"MBS must be a whole number, got 1.5"),
        (dict(gpus=8, cp=3, gbs=8), r"GPUs \(8\) must be divisible by TP\*CP\*PP = 1\*3\*1 = 3"),
    ],
)
def test_dense_constraints(llama8b, kwargs, message):
    with pytest.raises(LayoutError, match=message) as err:
        derive(Layout(**kwargs), llama8b)
    assert "\n" not in str(err.value)


def test_sequence_and_context_constraints(catalog):
    model = catalog.workload("llama3.1").sizes["8b"].model.model_copy(update={"seq_len": 8190})
    with pytest.raises(LayoutError, match=r"sequence length \(8190\) must be divisible by 2\*CP = 4"):
        derive(Layout(gpus=2, cp=2, gbs=2), model)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(gpus=128, pp=2, ep=3, gbs=1024), r"experts \(128\) must be divisible by EP \(3\)"),
        (dict(gpus=64, pp=2, ep=64, gbs=512), r"TP\*CP\*DP = 1\*1\*32 = 32 must be divisible by ETP\*EP = 1\*64 = 64"),
        (dict(gpus=64, tp=2, etp=3, pp=2, ep=2, gbs=512), r"expert FFN hidden \(8192\) must be divisible by ETP \(3\)"),
    ],
)
def test_moe_constraints(maverick, kwargs, message):
    with pytest.raises(LayoutError, match=message):
        derive(Layout(**kwargs), maverick)


def test_weak_scaling_follows_the_seed_rule(catalog):
    r = resolve(catalog, "llama3.1", "8b", "bf16", 256)
    assert (r.layout.gbs, r.derived.dp, r.derived.ga) == (4096, 128, 32)
    assert r.row is None and any("weak-scaled" in n for n in r.notes)
    n = resolve(catalog, "nemotron4", "340b", "fp8", 4096)
    assert (n.layout.gbs, n.derived.ga) == (1024, 16)
    m = resolve(catalog, "maxtext", "70b", "bf16", 4096)
    assert (m.layout.gbs, m.layout.fsdp, m.derived.ga) == (8192, 128, 1)


@pytest.mark.parametrize(
    "args, message",
    [
        (("llama3.1", "405b-proxy", "bf16", 256), r"change the layer count with scale"),
        (("llama3.1", "8b", "bf16", 4), r"published from 8 GPUs up and not expected to fit on 4"),
        (("llama3.1", "8b", "bf16", 9), r"GPUs \(9\) must be divisible by TP\*CP\*PP = 1\*2\*1 = 2"),
        (("llama3.1", "70b", "bf16", 80), r"GPUs \(80\) must be divisible by TP\*CP\*PP = 4\*2\*4 = 32"),
        (("llama4", "400b", "bf16", 64), r"published from 128 GPUs up"),
        (("llama3.1", "8b", "fp16", 8), r"unknown dtype 'fp16'"),
        (("llama3.1", "8b", "fp32", 8), r"no fp32 layout on h100"),
        (("llama3.1", "3b", "bf16", 8), r"has no size '3b'"),
        (("gpt5", "8b", "bf16", 8), r"unknown workload 'gpt5'"),
        (("maxtext", "70b", "bf16", 0), r"GPUs must be a positive whole number, got 0"),
    ],
)
def test_resolve_refuses_with_a_reason(catalog, args, message):
    with pytest.raises(LlmbError, match=message):
        resolve(catalog, *args)


def test_resolve_below_scale_with_overrides(catalog):
    r = resolve(catalog, "llama3.1", "8b", "bf16", 4, overrides={"cp": 1, "gbs": 8})
    assert (r.derived.dp, r.derived.ga) == (4, 2)


def test_resolve_fp8_on_a100_is_refused(catalog):
    with pytest.raises(LlmbError, match=r"A100 SXM 80GB has no fp8 peak"):
        resolve(catalog, "llama3.1", "8b", "fp8", 8, "a100")
