"""The audit recomputes every published number and finds the seeds' known slips."""

from __future__ import annotations

import json

from llmb.cli import main
from llmb.plan.audit import agrees, audit_catalog


def test_audit_covers_every_baseline(catalog):
    report = audit_catalog(catalog)
    assert report.rows == len(catalog.baselines()) == 67
    # tokens/s, MFU and days for each row that has them, TFLOP/s for Megatron's rows, and the
    # four printed FLOPs-per-sample values.
    assert len(report.checks) == 193


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
    assert others == []
    # Every tokens/s and days number in the seeds is right.
    assert not [c for c in report.mismatches if c.metric in ("tokens_per_s", "days_per_1t_tokens")]


def test_audit_groups_the_405b_pattern(catalog):
    patterns = audit_catalog(catalog).patterns()
    assert len(patterns) == 1
    (p,) = patterns
    assert len(p.checks) == 13 and 1.008 < p.low <= p.high < 1.01


def test_rounding_is_not_a_mismatch():
    assert agrees(27, 26.71)  # days printed as whole numbers
    assert agrees(5.06, 5.0569)
    assert not agrees(18.71, 37.43)
    assert not agrees(55.47, 54.97)


def test_audit_json(capsys):
    assert main(["audit", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["baseline_rows"] == 67 and len(data["mismatches"]) == 14
