"""Markdown report in the reference layout, and its PNG plots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


from llmb.catalog import default_catalog
from llmb.cli import main
from llmb.report import group_runs, plot_steps, write_report

LOGS = Path(__file__).parent / "fixtures" / "logs"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(run_id, gpus, step, tokens, mfu, status="OK", **kw):
    r = {"run_id": run_id, "workload": "llama3.1", "size": "8b", "dtype": "bf16", "gpus": gpus, "gpu_type": "h100",
         "status": status, "step_time_s": step, "tokens_per_s": tokens, "mfu": mfu, "days_per_1t_tokens": 1e12 / tokens / 86400,
         "convention": "recipe", "window": "11:44"}
    r.update(kw)
    return r


def test_group_keeps_newest_ok_run_per_gpu_count():
    runs = [row("a", 8, 12.0, 87000, 0.63), row("b", 8, 11.0, 95000, 0.7, status="INVALID"), row("c", 16, 12.1, 170000, 0.62),
            {"run_id": "anon", "status": "OK"}]
    (g,), unknown = group_runs(runs)
    assert g.runs[8]["run_id"] == "a" and g.gpu_counts == [8, 16]
    assert [u["run_id"] for u in unknown] == ["anon"]


def test_report_markdown_layout_and_plots(tmp_path):
    runs = [row("a", 8, 12.30, 85222, 0.6238), row("c", 16, 12.40, 169000, 0.618, status="INCOMPLETE")]
    steps = [{"iteration": i, "step_time_s": 40.0 if i == 0 else 12.3 + 0.01 * (i % 3)} for i in range(50)]
    md = write_report(runs, lambda r: steps, default_catalog(), tmp_path / "rep")
    text = md.read_text()
    assert "| llama3.1 8b BF16 | 8x H100 GPUs | 16x H100 GPUs |" in text
    assert "| Training step time (seconds per step) | 12.30 | 12.40 (INCOMPLETE) |" in text
    assert "| Throughput in tokens per second | 85222 | 169000 |" in text
    assert "| Model flops utilization | 62.38% | 61.80% |" in text
    assert "| Baseline step time (seconds per step) | 12.27 | 12.30 |" in text
    assert "| Baseline release | unstated | unstated |" in text
    assert "99.7% PASS" in text and "FAIL" in text  # the INCOMPLETE run never passes
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert pngs == ["llama3.1_8b_bf16_h100_16gpus_steps.png", "llama3.1_8b_bf16_h100_8gpus_steps.png",
                    "llama3.1_8b_bf16_h100_scaling.png"]
    for name in pngs:
        assert f"]({name})" in text
        data = (tmp_path / "rep" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_step_plot_without_step_times_is_skipped(tmp_path):
    assert plot_steps("t", [{"iteration": 1, "step_time_s": None}], (1, 2), tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_report_cli_from_store(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LLMB_HOME", str(tmp_path / "home"))
    d = tmp_path / "experiments" / "pretrain_llama3.1_8b_bf16_8"
    d.mkdir(parents=True)
    shutil.copy(LOGS / "nemo2_llama31_8b_bf16.log", d / "log.out")
    assert main(["import", str(d)]) == 0
    capsys.readouterr()
    assert main(["report", "--out", str(tmp_path / "rep"), "--json", "--workload", "llama3.1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["plots"]) == 2 and Path(out["markdown"]).read_text().count("| Training step time") == 1
    assert main(["report", "--out", str(tmp_path / "rep2"), "--workload", "nemotron4"]) == 1
    assert "no stored runs match" in capsys.readouterr().err
    assert main(["report", str(LOGS / "maxtext_llama2_70b.log"), "--out", str(tmp_path / "rep3"), "--no-plots"]) == 0
    assert "Runs without a workload" in capsys.readouterr().out


def test_report_shows_the_prediction_next_to_measured(tmp_path):
    from llmb.plan import resolve
    from llmb.plan.calibrate import stored_efficiency
    from llmb.plan.forecast import forecast

    runs = [row("a", 8, 12.30, 85222, 0.6238), row("c", 16, 12.40, 169000, 0.618)]
    md = write_report(runs, lambda r: [], default_catalog(), tmp_path / "rep")
    text = md.read_text()
    expected = forecast(resolve(default_catalog(), "llama3.1", "8b", "bf16", 8), stored_efficiency()).step_time_s
    assert "| llama3.1 8b BF16 predicted | 8x H100 GPUs | 16x H100 GPUs |" in text
    assert f"| Predicted step time (seconds per step) | {expected:.2f} |" in text
    assert f"| Measured / predicted step time | {12.30 / expected:.3f} |" in text


def test_report_baselines_of_a_chosen_release(tmp_path):
    grok = {**row("g", 512, 21.5, 390000, 0.40), "workload": "grok1", "size": "314b"}
    newest = write_report([grok], lambda r: [], default_catalog(), tmp_path / "new", plots=False).read_text()
    older = write_report([grok], lambda r: [], default_catalog(), tmp_path / "old", plots=False,
                         release="25.02").read_text()
    assert "| Baseline release | 25.05.02 |" in newest and "| Baseline step time (seconds per step) | 15.93 |" in newest
    assert "| Baseline release | 25.02 |" in older and "| Baseline step time (seconds per step) | 21.01 |" in older
