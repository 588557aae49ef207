"""Comparison with baselines, runs and saved sets; regressions along history."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmb.catalog import default_catalog
from llmb.cli import main
from llmb.errors import LlmbError
from llmb.results.compare import (
    Reference,
    baseline_reference,
    compare,
    history,
    run_reference,
    set_reference,
)

LOGS = Path(__file__).parent / "fixtures" / "logs"


def run(run_id, step, tokens=None, status="OK", gpus=8, when=None):
    return {"run_id": run_id, "workload": "llama3.1", "size": "8b", "dtype": "bf16", "gpus": gpus, "gpu_type": "h100",
            "step_time_s": step, "tokens_per_s": tokens, "status": status, "finished_at": when}


def test_pass_fail_at_tolerance():
    ref = Reference("ref", step_time_s=10.0, tokens_per_s=100.0)
    assert compare(run("a", 10.4, 96.0), ref).verdict == "PASS"
    c = compare(run("a", 10.6, 94.0), ref)
    assert c.verdict == "FAIL" and c.throughput_ratio == pytest.approx(0.94)
    assert compare(run("a", 10.6, 94.0), ref, tolerance=0.9).verdict == "PASS"
    # without tokens/s, the same configuration falls back to the inverse step-time ratio
    assert compare(run("a", 12.5), ref).throughput_ratio == pytest.approx(0.8)
    rows = {r.metric: r for r in c.rows}
    assert rows["step_time_s"].ratio == pytest.approx(1.06)
    with pytest.raises(LlmbError):
        compare(run("a", 1.0), ref, tolerance=0)


def test_not_ok_runs_never_pass_and_missing_reference_is_na():
    ref = Reference("ref", step_time_s=10.0)
    c = compare(run("a", 9.0, status="INCOMPLETE"), ref)
    assert c.verdict == "FAIL" and "INCOMPLETE" in c.notes[0]
    assert compare(run("a", 9.0), None).verdict == "N/A"


def test_another_configuration_is_not_comparable():
    """Runs of different configurations never PASS: at most their tokens/s are set side by side."""
    ref = run_reference(run("b", 10.0, gpus=16))
    c = compare(run("a", 10.0), ref)
    assert c.verdict == "NOT COMPARABLE" and c.throughput_ratio is None and "16xh100" in c.notes[0]
    c = compare(run("a", 10.0, tokens=500.0), run_reference(run("b", 1.0, tokens=100.0, gpus=16)))
    assert c.verdict == "NOT COMPARABLE" and c.throughput_ratio == pytest.approx(5.0)


def test_a_layout_other_than_the_baselines_is_not_comparable():
    other = {**run("a", 12.39), "layout": {"tp": 2, "cp": 2, "gbs": 128}}
    c = compare(other, baseline_reference(other, default_catalog()))
    assert c.verdict == "NOT COMPARABLE" and "TP 2 vs 1" in c.notes[0]


def test_default_reference_falls_back_to_the_predictor_then_to_history():
    from llmb.results.compare import default_reference

    cat = default_catalog()
    # 24 GPUs: weak-scaled, no published baseline; the predictor has one.
    ref, why = default_reference(run("a", 12.0, gpus=24), cat, [])
    assert ref is not None and ref.label.startswith("predicted") and why is None
    # A CPU proxy: no baseline, no prediction; the median of the earlier OK runs.
    proxy = lambda rid, step, when: {**run(rid, step, when=when), "proxy": "cpu-tiny", "device": "cpu", "gpus": 1}  # noqa: E731
    stored = [proxy("p1", 1.0, "2026-01-01"), proxy("p2", 3.0, "2026-01-02"), proxy("p3", 2.0, "2026-01-03")]
    ref, _ = default_reference(proxy("p4", 2.0, "2026-01-04"), cat, stored)
    assert ref.step_time_s == 2.0 and "last 3 earlier" in ref.label
    ref, why = default_reference(proxy("p0", 2.0, "2025-12-31"), cat, stored)
    assert ref is None and "cpu-tiny proxy" in why


def test_baseline_reference_from_catalog():
    ref = baseline_reference(run("a", 12.39), default_catalog())
    assert ref.step_time_s == 12.27 and ref.tokens_per_s == 85459 and ref.mfu == pytest.approx(0.6247)
    c = compare(run("a", 12.39, tokens=8192 * 128 / 12.39), ref)
    assert c.verdict == "PASS" and c.throughput_ratio == pytest.approx(8192 * 128 / 12.39 / 85459)
    assert baseline_reference({"run_id": "x"}, default_catalog()) is None


def test_set_reference_picks_the_matching_configuration():
    members = [run("s8", 10.0), run("s16", 11.0, gpus=16)]
    assert set_reference(run("a", 10.0, gpus=16), members, "ref").step_time_s == 11.0
    assert set_reference(run("a", 10.0, gpus=32), members, "ref") is None


def test_history_flags_regressions_against_best_earlier_run():
    runs = [run("r1", 10.0, when="1"), run("r2", 9.0, when="2"), run("r3", 9.3, when="3"),
            run("r4", 10.0, when="4"), run("r5", 5.0, status="INVALID", when="5"), run("r6", 9.1, when="6")]
    h = {e.run_id: e for e in history(runs)}
    assert h["r1"].ratio is None and not h["r1"].regression
    assert h["r3"].best_before == "r2" and not h["r3"].regression  # 96.8 %
    assert h["r4"].regression and h["r4"].ratio == pytest.approx(0.9)
    assert h["r6"].best_before == "r2"  # the INVALID r5 never becomes the best


def test_compare_cli_baseline_set_and_history(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LLMB_HOME", str(tmp_path / "home"))
    ids = []
    for i, fixture in enumerate(["nemo2_llama31_8b_bf16.log", "nemo2_killed.log"]):
        d = tmp_path / f"e{i}" / "llama3.1_8b_bf16_gpus8" / f"2026010{i + 1}T000000Z"
        d.mkdir(parents=True)
        shutil.copy(LOGS / fixture, d / "log.txt")
        assert main(["import", str(d), "--json"]) == 0
        ids.append(json.loads(capsys.readouterr().out)[0]["run_id"])
    assert main(["compare", "--json", "--history"]) == 0
    out = json.loads(capsys.readouterr().out)
    verdicts = {c["run_id"]: c["verdict"] for c in out["comparisons"]}
    assert verdicts == {ids[0]: "PASS", ids[1]: "FAIL"}  # the killed run is INCOMPLETE
    assert [h["run_id"] for h in out["history"]] == ids
    assert main(["jobs", "save-set", "golden", ids[0]]) == 0
    capsys.readouterr()
    assert main(["compare", ids[1], "--set", "golden", "--json"]) == 0
    (c,) = json.loads(capsys.readouterr().out)["comparisons"]
    assert c["reference"].startswith("set golden") and c["throughput_ratio"] == pytest.approx(1.0, abs=0.01)
    assert main(["compare", str(LOGS / "nemo2_llama31_8b_bf16.log"), "--workload", "llama3.1", "--size", "8b",
                 "--gpus", "8", "--dtype", "fp8"]) == 0
    assert "FAIL" in capsys.readouterr().out  # a BF16-speed log judged as FP8 falls short
    assert main(["compare", "--against", "x", "--set", "y"]) == 1
    assert main(["compare", "--tolerance", "-1"]) == 1
    assert main(["compare", "--set", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "no saved set 'nope'" in err
