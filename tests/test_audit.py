"""The audit recomputes every published number and finds the seeds' known slips."""

from __future__ import annotations

import json

from llmb.cli import main
from llmb.plan.audit import agrees, audit_catalog


def test_audit_covers_every_baseline(catalog):
    report = audit_catalog(catalog)
    assert report.rows == len(catalog.baselines()) == 67 + 46
    # tokens/s, MFU and days for each row that has them, TFLOP/s for Megatron's rows, and the
    # five printed FLOPs-per-sample values (Grok-1's 4.27e15 among them).
    assert len(report.checks) == 193 + 6 * 3 + 40 * 2 + 16 + 1


def test_audit_finds_the_maverick_peak_slip(catalog):
    report = audit_catalog(catalog)
    slip = [c for c in report.mismatches if c.workload == "llama4-maverick"]
    assert len(slip) == 1
    (check,) = slip
    assert (check.gpus, check.dtype, check.metric, check.published) == (128, "bf16", "mfu_pct", 18.71)
    assert any("FP8 peak (4900 TFLOP/s)" in cause for cause in check.causes)


def test_audit_everything_else_outside_405b_agrees(catalog):
    report = audit_catalog(catalog)
    others = [c for c in report.mismatches if "405b" not in c.size and c.workload != "llama4-maverick"]
    # One slip in the published Grok-1 rows beyond the README's list: v25.02 FP8 at 1024 GPUs
    # prints 17.01 s, but its tokens/s (and MFU) imply 17.10 s.
    assert sorted((c.workload, c.gpus, c.dtype, c.metric) for c in others) == [
        ("grok1", 1024, "fp8", "mfu_pct"), ("grok1", 1024, "fp8", "tokens_per_s")]
    slip = next(c for c in others if c.metric == "tokens_per_s")
    assert any("step time of 17.1 s" in cause for cause in slip.causes)
    others = [c for c in others if c.workload != "grok1"]
    assert others == []
    # Every tokens/s and days number in the seeds is right (the published CSV's one slip aside).
    assert not [c for c in report.mismatches if c.metric in ("tokens_per_s", "days_per_1t_tokens")
                and c.workload != "grok1"]


def test_audit_groups_the_405b_pattern(catalog):
    patterns = audit_catalog(catalog).patterns()
    assert len(patterns) == 1
    (p,) = patterns
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
    assert data["baseline_rows"] == 113 and len(data["mismatches"]) == 22
