"""Single-process checks of the engine's pieces: models, init, data, proxies, statistics, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmb.catalog import default_catalog


def _tiny_spec(workload: str, size: str):
    from llmb.plan.proxy import proxy_spec, shrink_model

    cat = default_catalog()
    return shrink_model(cat.size(cat.workload(workload), size)[1].model, proxy_spec("cpu-tiny"))


def test_moe_layer_matches_dense_reference_of_same_routing():
    from llmb.engine.models.moe import MoE, route

    torch.manual_seed(0)
    moe = MoE(dim=16, num_experts=4, top_k=2, expert_hidden=24, activation="swiglu",
              shared_experts=1, shared_hidden=8)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(3, 5, 16)
    got = moe(x)

    tokens = x.reshape(-1, 16)
    gates, experts = route(moe.router(tokens), 2)
    want = torch.zeros_like(tokens)
    w1, w2, w3 = moe.experts.w1, moe.experts.w2, moe.experts.w3
    for t in range(tokens.shape[0]):
        for k in range(2):
            e = int(experts[t, k])
            h = torch.nn.functional.silu(tokens[t] @ w1[e]) * (tokens[t] @ w3[e])
            want[t] += gates[t, k] * (h @ w2[e])
    want += moe.shared(tokens)
    torch.testing.assert_close(got.reshape(-1, 16), want, rtol=1e-5, atol=1e-6)
    # Every token reached exactly top_k experts: nothing dropped.
    assert experts.shape == (15, 2)


def test_families_build_on_meta_and_materialize():
    from llmb.engine.models.moe import MoE
    from llmb.engine.models.layers import FeedForward, LayerNorm, RMSNorm
    from llmb.engine.models.transformer import build_model

    for workload, size, norm, moe_layers in [
        ("llama3.1", "8b", RMSNorm, 0), ("nemotron4", "340b", LayerNorm, 0), ("llama4-maverick", "400b", RMSNorm, 2),
    ]:
        spec = _tiny_spec(workload, size)
        model = build_model(spec)
        assert all(p.is_meta for p in model.parameters())
        model.to_empty(device="cpu")
        model.init_weights(seed=3)
        assert isinstance(model.norm, norm)
        assert sum(isinstance(b.feed_forward, MoE) for b in model.layers.values()) == moe_layers
        if workload == "nemotron4":
            ff = model.layers["0"].feed_forward
            assert isinstance(ff, FeedForward) and ff.w3 is None  # squared ReLU, not gated
        tokens = torch.randint(0, spec.vocab, (2, spec.seq_len))
        assert model(tokens).shape == (2, spec.seq_len, spec.vocab)
        assert torch.isfinite(model(tokens)).all()


def test_seeded_init_is_independent_of_sharding():
    from llmb.engine.models.init import seeded_normal_

    full = torch.empty(600, 40)
    seeded_normal_(full, "w", seed=7, std=0.02)
    part = torch.empty(150, 16)  # rows 300..449, columns 8..23
    seeded_normal_(part, "w", seed=7, std=0.02, place=((600, 40), (300, 8)))
    assert torch.equal(part, full[300:450, 8:24])
    experts = torch.empty(4, 10, 6)
    seeded_normal_(experts, "e", seed=1, std=1.0)
    local = torch.empty(2, 10, 6)
    seeded_normal_(local, "e", seed=1, std=1.0, place=((4, 10, 6), (2, 0, 0)))
    assert torch.equal(local, experts[2:])
    other = torch.empty(600, 40)
    seeded_normal_(other, "w", seed=8, std=0.02)
    assert not torch.equal(other, full)


def test_synthetic_data_splits_the_same_global_batch():
    from llmb.engine.data.synthetic import SyntheticTokens

    one = SyntheticTokens(vocab=100, seq_len=8, micro_batch=2, ga=4, seed=5).step_batches(3)
    ranks = [
        SyntheticTokens(vocab=100, seq_len=8, micro_batch=2, ga=2, dp_rank=r, dp_size=2, seed=5).step_batches(3)
        for r in range(2)
    ]
    glued = torch.cat([t for r in ranks for t, _ in r])
    assert torch.equal(glued, torch.cat([t for t, _ in one]))
    tokens, labels = one[0]
    assert torch.equal(tokens[:, 1:], labels[:, :-1])


def test_context_parallel_positions_balance_and_cover():
    from llmb.engine.parallel.context import cp_positions

    parts = [cp_positions(16, 2, r) for r in range(2)]
    assert sorted(torch.cat(parts).tolist()) == list(range(16))
    assert parts[0].tolist() == [0, 1, 2, 3, 12, 13, 14, 15]


def test_context_parallel_buffers_refill_under_fp32_attention_wrappers():
    """bf16 on CPU wraps attention cores (fp32 attention); the CP masks must still be found and
    refilled after to_empty."""
    from llmb.plan.run import RunRequest, resolve_run
    from llmb.engine.models.transformer import UpcastAttention, build_model, upcast_attention_on_cpu
    from llmb.engine.parallel.context import ContextParallelAttention, apply_cp, cp_positions, refresh_cp_buffers

    run = resolve_run(RunRequest(workload="llama3.1", proxy="cpu-tiny", nproc=1))
    model = build_model(run.model, "meta")
    apply_cp(model, None, 2, 1)
    upcast_attention_on_cpu(model)
    model.to_empty(device="cpu")
    refresh_cp_buffers(model)
    seq = run.model.seq_len
    pos, all_pos = cp_positions(seq, 2, 1), torch.cat([cp_positions(seq, 2, r) for r in range(2)])
    cores = [b.attention.core for b in model.layers.values()]
    assert all(isinstance(c, UpcastAttention) and isinstance(c.inner, ContextParallelAttention) for c in cores)
    assert all(torch.equal(c.inner.mask, all_pos.unsqueeze(0) <= pos.unsqueeze(1)) for c in cores)
    # The wrapper runs its core in fp32 and hands back the input dtype.
    seen = []

    class Core(torch.nn.Module):
        def forward(self, q, k, v):
            seen.append(q.dtype)
            return q

    q = torch.randn(1, 2, 4, 8, dtype=torch.bfloat16)
    assert UpcastAttention(Core())(q, q, q).dtype == torch.bfloat16 and seen == [torch.float32]


def test_proxy_keeps_family_and_kinds_of_parallelism():
    from llmb.plan.run import RunRequest, resolve_run

    run = resolve_run(RunRequest(workload="llama4-maverick", nproc=4))
    assert run.model.family == "llama4" and run.model.moe is not None
    assert (run.layout.pp, run.layout.ep, run.derived.dp, run.derived.vp) == (2, 2, 2, 2)
    d = run.config()
    assert d.proxy == "cpu-small" and d.full_model.hidden == 5120 and d.size_label == "400b-cpu-small"
    assert d.proxy_shrink["hidden"] == run.model.hidden
    one = resolve_run(RunRequest(workload="llama3.1", nproc=1))
    assert set(one.dropped_parallelism) == {"cp", "dp"}
    # Maverick's H100 recipe (TP4, EP128, ETP4): TP, EP and tensor-parallel experts all stay.
    h100 = resolve_run(RunRequest(workload="llama4-maverick", gpu_type="h100", nproc=4))
    assert (h100.layout.tp, h100.layout.ep, h100.derived.etp, h100.derived.dp) == (2, 2, 2, 2)
    assert {"tp", "ep", "etp", "dp"} <= set(h100.kept_parallelism)
    assert (h100.parallel_dims.etp, h100.parallel_dims.edp) == (2, 1)
    # Two ranks cannot hold TP and EP: ETP goes with TP, EP is reported as dropped.
    two = resolve_run(RunRequest(workload="llama4-maverick", gpu_type="h100", nproc=2))
    assert two.derived.etp == 2 and "ep" in two.dropped_parallelism


def test_window_statistics_leave_out_warmup():
    from llmb.engine.runner import window_stats

    stats = window_stats([9.0, 1.0, 2.0, 3.0, 100.0], warmup=1, window=3)
    assert stats.first_step == 2 and stats.last_step == 4
    assert stats.mean == 2.0 and stats.count == 3
    assert window_stats([5.0], warmup=1, window=3) is None


def test_lr_schedule_warms_up_then_decays():
    from llmb.engine.optim import lr_lambda

    f = lr_lambda(warmup_steps=4, total_steps=20, min_ratio=0.1)
    assert f(0) == pytest.approx(0.25) and f(3) == pytest.approx(1.0)
    assert f(4) == pytest.approx(1.0) and f(20) == pytest.approx(0.1)
    assert f(10) > f(15) > f(19)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["run", "--proxy", "cpu-tiny", "--dtype", "fp8"], "fp8 needs a CUDA GPU"),
        (["run", "--proxy", "no-such-proxy"], "unknown proxy"),
        (["run", "--proxy", "cpu-tiny", "--tp", "3", "--nproc", "3"], "divisible"),
    ],
)
def test_run_user_mistakes_are_one_line(argv, needle, capsys):
    from llmb.cli import main

    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert needle in " ".join(err.split()) and "Traceback" not in err


def test_run_env_knobs_and_dry_run(monkeypatch, capsys):
    from llmb.cli import main

    monkeypatch.setenv("MAX_STEPS", "7")
    monkeypatch.setenv("DTYPE", "fp32")
    monkeypatch.setenv("GBS", "16")
    assert main(["run", "--proxy", "cpu-tiny", "--dry-run", "--mbs", "4"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["steps"] == 7 and cfg["dtype"] == "fp32"
    assert cfg["layout"]["gbs"] == 16 and cfg["layout"]["mbs"] == 4  # env, then CLI
    monkeypatch.setenv("TP", "x")
    assert main(["run", "--dry-run"]) == 1


def test_run_in_process_writes_the_experiment(tmp_path, monkeypatch, capsys):
    from llmb.cli import main

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path))
    monkeypatch.setenv("LLMB_HOME", str(tmp_path / "home"))
    assert main(["run", "--proxy", "cpu-tiny", "--steps", "4", "--dtype", "fp32", "--warmup-steps", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    exp = tmp_path / "llama3.1_8b-cpu-tiny_fp32_gpus1"
    (run_dir,) = list(exp.iterdir())
    assert summary["status"] == "complete" and summary["steps_completed"] == 4
    assert summary["window"]["first_step"] == 2 and summary["window"]["count"] == 3
    assert "measured CPU GEMM ceiling" in summary["hardware"]["mfu_denominator"]["label"]
    assert summary["hardware"]["device"] == "cpu" and summary["size"] == "8b" and summary["proxy"] == "cpu-tiny"
    assert summary["metrics"]["tokens_per_s"] > 0
    for name in ("config.json", "environment.json", "log.txt", "metrics.jsonl", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 4
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    from llmb.logline import parse_step_line

    lines = [parse_step_line(x) for x in (run_dir / "log.txt").read_text().splitlines()]
    assert [x.iteration for x in lines] == [1, 2, 3, 4]
    assert json.loads((run_dir / "config.json").read_text())["proxy"] == "cpu-tiny"


def test_proxies_file_errors_are_one_line(tmp_path):
    from llmb.plan.proxy import load_proxies
    from llmb.errors import LlmbError

    bad = tmp_path / "proxies.yaml"
    bad.write_text("default: x\nparallel_priority: [pp]\nproxies:\n  x: {layers: 2, hidden: 8, heads: 2, "
                   "query_groups: 1, vocab: 16, seq_len: 8, num_experts: 2, colour: red}\n")
    with pytest.raises(LlmbError, match="colour"):
        load_proxies.__wrapped__(bad)


def test_doctor_measures_and_caches_the_ceiling(tmp_path, monkeypatch, capsys):
    from llmb.cli import main

    monkeypatch.setenv("LLMB_HOME", str(tmp_path))
    assert main(["doctor", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["torch"] == __import__("torch").__version__
    assert facts["gemm_ceiling_measured"]["fp32"]["gflops"] > 0
    assert facts["gemm_ceiling_measured"]["bf16"]["gflops"] > 0
    from llmb.engine.ceiling import cached_ceiling

    assert cached_ceiling("fp32") == pytest.approx(facts["gemm_ceiling_measured"]["fp32"]["gflops"] * 1e9)


def test_a_low_measurement_never_lowers_the_cached_ceiling(tmp_path, monkeypatch):
    """A ceiling measured while the cores are busy comes out low; keeping it would report MFU
    above 100 % for every later run."""
    from llmb.engine.ceiling import cached_ceiling, store_ceiling

    monkeypatch.setenv("LLMB_HOME", str(tmp_path))
    assert store_ceiling("bf16", 3.0e11) == 3.0e11
    assert store_ceiling("bf16", 0.9e11) == 3.0e11
    assert cached_ceiling("bf16") == 3.0e11
    assert store_ceiling("bf16", 3.5e11) == 3.5e11


def test_run_trains_on_real_text(tmp_path, monkeypatch, capsys):
    """--data sample trains on the shipped prose: unlike uniform random tokens, it is learnable,
    so the loss falls well below ln(vocab) within a few steps."""
    import json
    import math

    from llmb.cli import main

    torch.set_num_threads(1)
    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "exp"))
    assert main(["run", "--proxy", "cpu-small", "--dtype", "fp32", "--data", "sample", "--steps", "6", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "complete"
    assert summary["final_loss"] < math.log(8192) - 1.0 < summary["first_loss"]
    config = json.loads((Path(summary["experiment_dir"]) / "config.json").read_text())
    assert config["request"]["data"] == "sample"


@pytest.mark.parametrize("data, message", [("sample", "beyond the model's vocabulary of 512"),
                                           ("/nonexistent/prefix", "no indexed dataset")])
def test_run_refuses_unusable_data_before_writing_anything(data, message, tmp_path, monkeypatch, capsys):
    from llmb.cli import main

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "exp"))
    assert main(["run", "--proxy", "cpu-tiny", "--data", data, "--steps", "2"]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "exp").exists()
