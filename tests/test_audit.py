"""The audit recomputes every published number and finds the seeds' known slips."""

from __future__ import annotations

import json

from llmb.cli import main
from llmb.plan.audit import agrees, audit_catalog

#: the catalog's sources for dgxc-benchmarking v25.05's README tables (Nemotron-4, Grok-1 GB200)
V25_05 = ("nemo2-25.05", "nemo2-gb200-25.05")


def test_audit_covers_every_baseline(catalog):
    report = audit_catalog(catalog)
    # the seeds' 67, shared/published's 46, dgxc-benchmarking v25.05's 14 (Grok-1 GB200 6,
    # Nemotron-4 340B 8)
    assert report.rows == len(catalog.baselines()) == 67 + 46 + 14
    # tokens/s, MFU and days for each row that has them, TFLOP/s for Megatron's rows, and the
    # five printed FLOPs-per-sample values (Grok-1's 4.27e15 among them).
    assert len(report.checks) == 193 + 6 * 3 + 40 * 2 + 16 + 1 + 14 * 3


def test_audit_finds_the_maverick_peak_slip(catalog):
    report = audit_catalog(catalog)
    slip = [c for c in report.mismatches if c.workload == "llama4-maverick"]
    assert len(slip) == 1
    (check,) = slip
    assert (check.gpus, check.dtype, check.metric, check.published) == (128, "bf16", "mfu_pct", 18.71)
    assert any("FP8 peak (4900 TFLOP/s)" in cause for cause in check.causes)


def test_audit_everything_else_outside_405b_agrees(catalog):
    report = audit_catalog(catalog)
    others = [c for c in report.mismatches
              if "405b" not in c.size and c.workload != "llama4-maverick" and c.source not in V25_05]
    # One slip in the published Grok-1 rows beyond the README's list: v25.02 FP8 at 1024 GPUs
    # prints 17.01 s, but its tokens/s (and MFU) imply 17.10 s.
    assert sorted((c.workload, c.gpus, c.dtype, c.metric) for c in others) == [
        ("grok1", 1024, "fp8", "mfu_pct"), ("grok1", 1024, "fp8", "tokens_per_s")]
    slip = next(c for c in others if c.metric == "tokens_per_s")
    assert any("step time of 17.1 s" in cause for cause in slip.causes)
    others = [c for c in others if c.workload != "grok1"]
    assert others == []
    # Every tokens/s and days number in the seeds is right (the published CSV's one slip aside;
    # v25.05's are tested below).
    assert not [c for c in report.mismatches if c.metric in ("tokens_per_s", "days_per_1t_tokens")
                and c.workload != "grok1" and c.source not in V25_05]


def test_audit_explains_the_v25_05_tables(catalog):
    """dgxc-benchmarking v25.05: Grok-1's GB200 512-GPU tokens/s and days use the 256-GPU
    column's GBS 512; Nemotron-4's NeMo 2 MFU counts 6 x parameters FLOPs per token, and two of
    its days are truncated, not rounded (96.69 -> 96, 130.95 -> 130)."""
    found = [c for c in audit_catalog(catalog).mismatches if c.source in V25_05]
    grok = sorted((c.gpus, c.dtype, c.metric) for c in found if c.workload == "grok1")
    assert grok == [(512, d, m) for d in ("bf16", "fp8") for m in ("days_per_1t_tokens", "tokens_per_s")]
    assert all(any("uses GBS 512" in x for x in c.causes) for c in found if c.workload == "grok1")
    nemo = [c for c in found if c.workload == "nemotron4"]
    assert sorted(c.metric for c in nemo) == ["days_per_1t_tokens"] * 2 + ["mfu_pct"] * 8
    assert sorted((c.gpus, c.dtype, c.published) for c in nemo if c.metric == "days_per_1t_tokens") == [
        (128, "fp8", 130.0), (256, "bf16", 96.0)]


def test_audit_groups_the_405b_pattern(catalog):
    patterns = audit_catalog(catalog).patterns()
    assert len(patterns) == 2
    # Nemotron-4's NeMo 2 MFU (v25.05): 0.85 of the recipe's FLOPs, the 6n convention
    six_n = next(p for p in patterns if p.high < 0.9)
    assert {c.workload for c in six_n.checks} == {"nemotron4"} and len(six_n.checks) == 8
    p = next(p for p in patterns if p.low > 1.0)
    # the H100 405B rows, the proxies, Megatron's 405B and the six GB200 405B rows: the seeds'
    # 405B MFU counts ~0.9 % more FLOPs than the recipe formula, on GB200 too
    assert len(p.checks) == 13 + 6 and 1.008 < p.low <= p.high <= 1.0101


def test_rounding_is_not_a_mismatch():
    assert agrees(27, 26.71)  # days printed as whole numbers
    assert agrees(5.06, 5.0569)
    assert not agrees(18.71, 37.43)
    assert not agrees(55.47, 54.97)


def test_audit_json(capsys):
    assert main(["audit", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["baseline_rows"] == 127 and len(data["mismatches"]) == 36
