"""The results commands end to end through llmb's entry point (one-line errors, exit codes)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from llmb.cli import main

LOGS = Path(__file__).parent / "fixtures" / "logs"


@pytest.fixture(autouse=True)
def llmb_home(tmp_path, monkeypatch):
    home = tmp_path / "llmb-home"
    monkeypatch.setenv("LLMB_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "200")
    return home


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def experiment(tmp_path, name, fixture, folder_name):
    d = tmp_path / "experiments" / folder_name / "20260101T000000Z"
    d.mkdir(parents=True)
    shutil.copy(LOGS / fixture, d / name)
    return d


def test_parse_json_with_folder_inference(tmp_path, capsys):
    d = experiment(tmp_path, "log-llama.out", "nemo2_llama31_8b_bf16.log", "pretrain_llama3.1_8b_bf16_8")
    (d / "sbatch_llama.out").write_text("submitted batch job 42\n")  # no steps: skipped inside folders
    code, out, err = run(capsys, "parse", str(d.parent), "--json")
    assert code == 0, err
    (res,) = json.loads(out)
    assert res["format"] == "nemo2" and res["status"] == "OK" and res["window"] == "11:44"
    assert res["run"]["workload"] == "llama3.1" and res["run"]["gpus"] == 8
    m = res["metrics"]
    st = res["stats"]["step_time_s"]
    assert m["step_time_s"] == pytest.approx(st["mean"])
    # tokens/s = seq 8192 x GBS 128 / step time, as plan computes it
    assert m["tokens_per_s"] == pytest.approx(8192 * 128 / st["mean"])
    assert 0.55 < m["mfu"] < 0.70 and m["convention"] == "recipe"
    assert m["tflops_per_gpu_source"] == "log"
    assert res["baseline"]["step_time_s"] == 12.27


def test_parse_csv_and_window_and_options(capsys):
    code, out, err = run(capsys, "parse", str(LOGS / "megatron_llama3_fp8.log"), "--csv", "--window", "35:44",
                         "--workload", "megatron-llama3", "--size", "8b", "--dtype", "fp8", "--gpus", "8")
    assert code == 0, err
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["window"] == "35:44" and row["present"] == "10" and row["status"] == "OK"
    assert float(row["mfu"]) > 0 and row["gpus"] == "8"


def test_parse_table_output_mentions_status_and_notes(capsys):
    code, out, _ = run(capsys, "parse", str(LOGS / "nemo2_killed.log"), str(LOGS / "nemo2_nan_loss.log"))
    assert code == 0
    assert "INCOMPLETE" in out and "INVALID" in out and "stopped before its planned last step" in out


def test_torchtitan_metrics_from_tokens_per_second(capsys):
    code, out, err = run(capsys, "parse", str(LOGS / "torchtitan_llama3_8b.log"), "--json", "--window", "2:30",
                         "--workload", "llama3.1", "--size", "8b", "--gpus", "8")
    assert code == 0, err
    (res,) = json.loads(out)
    assert res["metrics"]["step_time_source"] == "tokens/s in the log"
    # this fixture's tokens/s are far too high for an 8B model: the MFU check must say so
    assert any("impossible" in n for n in res["notes"])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["parse", "/no/such/log"], "no such log file or folder"),
        (["parse", str(LOGS / "nemo2_killed.log"), "--window", "9"], "must look like A:B"),
        (["parse", str(LOGS / "nemo2_killed.log"), "--window", "40:3"], "empty or negative"),
        (["parse", str(LOGS / "nemo2_killed.log"), "--format", "jax"], "unknown log format"),
        (["parse", str(LOGS / "nemo2_killed.log"), "--workload", "gpt9", "--size", "8b", "--gpus", "8"], "unknown workload"),
        (["parse", str(LOGS / "nemo2_killed.log"), "--json", "--csv"], "choose one of"),
        (["parse", str(LOGS / "nemo2_killed.log"), "--gpus", "0"], "--gpus"),
        (["parse", str(LOGS)+"/../"+"__nothing__"], "no such log file"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert err.strip().count("\n") == 0 and err.startswith("error:")
    assert needle in err


def test_folder_without_logs_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "parse", str(tmp_path / "empty"))
    assert code == 1 and "no log files" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.log").write_text("hello\n")
    code, _, err = run(capsys, "parse", str(tmp_path / "other"))
    assert code == 1 and "no step lines" in err


def test_explicit_file_without_steps_is_no_data(tmp_path, capsys):
    f = tmp_path / "x.log"
    f.write_bytes(b"\x00\xffnothing\n")
    code, out, _ = run(capsys, "parse", str(f), "--json")
    assert code == 0 and json.loads(out)[0]["status"] == "NO_DATA"


def test_import_list_show_export(tmp_path, capsys, llmb_home):
    d = experiment(tmp_path, "log.out", "nemo2_llama31_8b_bf16.log", "llama3.1_8b_bf16_gpus8")
    code, out, err = run(capsys, "import", str(d), "--cluster", "eos", "--json")
    assert code == 0, err
    (done,) = json.loads(out)
    assert done["run_id"].startswith("llama3.1_8b_bf16_gpus8-20260101T000000Z-") and done["status"] == "OK"
    assert (llmb_home / "jobs.db").exists()
    code, out, _ = run(capsys, "import", str(d))  # again: same run id, updated in place
    code, out, _ = run(capsys, "jobs", "list", "--json")
    (row,) = json.loads(out)
    assert row["cluster"] == "eos" and row["started_at"] == "2026-01-01T00:00:00Z"
    assert row["mfu"] == pytest.approx(row["metrics"]["mfu"]) and row["layout"]["cp"] == 2
    code, out, _ = run(capsys, "jobs", "show", done["run_id"][:12], "--json", "--steps")
    shown = json.loads(out)
    assert len(shown["steps"]) == 50 and shown["steps"][0]["iteration"] == 0
    code, out, _ = run(capsys, "jobs", "export", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1 and rows[0]["run_id"] == done["run_id"] and rows[0]["workload"] == "llama3.1"
    target = tmp_path / "runs.json"
    code, out, _ = run(capsys, "jobs", "export", "--format", "json", "--output", str(target))
    assert code == 0 and json.loads(target.read_text())[0]["run_id"] == done["run_id"]
    code, out, _ = run(capsys, "jobs", "list")
    assert "llama3.1 8b bf16 x8" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["jobs", "show", "nope"], "no run 'nope'"),
        (["jobs", "export", "--format", "xml"], "unknown export format"),
        (["jobs", "save-set", "ref", "nope"], "no run 'nope'"),
        (["import", str(LOGS), "--run-id", "x"], "--run-id names one run"),
    ],
)
def test_jobs_bad_input_is_one_line(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 1 and err.strip().count("\n") == 0 and needle in err


@pytest.mark.parametrize(
    "fixture, fmt, status",
    [
        ("nemo2_llama31_8b_bf16.log", "nemo2", "OK"),
        ("nemo1_tqdm.log", "nemo1", "OK"),
        ("megatron_llama3_fp8.log", "megatron", "OK"),
        ("mbridge_llama3_8b.log", "mbridge", "OK"),
        ("maxtext_llama2_70b.log", "maxtext", "OK"),
        ("torchtitan_llama3_8b.log", "torchtitan", "OK"),
        ("llmb_small.log", "llmb", "OK"),
        ("nemo2_nan_loss.log", "nemo2", "INVALID"),
        ("nemo2_killed.log", "nemo2", "INCOMPLETE"),
        ("malformed_nemo2.log", "nemo2", "INVALID"),
    ],
)
def test_parse_every_fixture(capsys, fixture, fmt, status):
    argv = ["parse", str(LOGS / fixture), "--json", "--steps"]
    if fmt == "torchtitan":
        argv += ["--window", "11:30"]  # 30 steps, no printed total
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    (res,) = json.loads(out)
    assert (res["format"], res["status"]) == (fmt, status)
    assert len(res["steps"]) == res["steps_found"] > 0
    code, out, _ = run(capsys, "parse", str(LOGS / fixture), "--format", fmt, "--csv")
    assert code == 0 and f",{fmt}," in out


def test_layout_overrides_change_the_metrics(capsys):
    base = ["parse", str(LOGS / "nemo2_llama31_8b_bf16.log"), "--json", "--workload", "llama3.1", "--size", "8b", "--gpus", "8"]
    code, out, _ = run(capsys, *base)
    ref = json.loads(out)[0]
    code, out, err = run(capsys, *base, "--layout", "gbs=256")
    assert code == 0, err
    res = json.loads(out)[0]
    assert res["layout"]["gbs"] == 256
    assert res["metrics"]["tokens_per_s"] == pytest.approx(2 * ref["metrics"]["tokens_per_s"])
    code, _, err = run(capsys, *base, "--layout", "foo=1")
    assert code == 1 and "unknown layout knob 'foo'" in err
    code, out, _ = run(capsys, "parse", str(LOGS / "nemo2_killed.log"), "--json", "--workload", "llama3.1", "--size", "8b",
                       "--gpus", "4")
    res = json.loads(out)[0]  # a scale the catalog cannot plan: statistics, no metrics, and why
    assert res["metrics"] is None and any("not expected to fit on 4" in n for n in res["notes"])


def test_json_is_strict_even_with_nan_losses(capsys):
    code, out, _ = run(capsys, "parse", str(LOGS / "nemo2_nan_loss.log"), "--json", "--steps")

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    (res,) = json.loads(out, parse_constant=reject)
    assert res["steps"][30]["loss"] == "nan" and res["status"] == "INVALID"


def test_llmb_experiment_folder_uses_the_recorded_recipe(tmp_path, capsys):
    """An llmb run's folder records its proxy model, layout and MFU denominator: the parser
    uses them, so `llmb parse` agrees with the engine's own summary."""
    import json as _json

    from llmb.logline import format_step_line
    from llmb.plan.run import RunRequest, resolve_run
    from llmb.records import Denominator, Hardware

    run = resolve_run(RunRequest(proxy="cpu-tiny", steps=6, warmup_steps=2, window=4))
    small = run.model
    cfg = run.config(Hardware(gpu_type="h100", device="cpu", mfu_denominator=Denominator(
        flops=1e11, label="measured CPU GEMM ceiling (bf16, 2 threads)")))
    exp = tmp_path / "llama3.1_8b-cpu-tiny_bf16_gpus1" / "20261123T000000000Z"
    exp.mkdir(parents=True)
    cfg.write(exp / "config.json")
    lines = [format_step_line(i, 6, step_time_s=0.5, loss=5.0) for i in range(1, 7)]
    (exp / "log.txt").write_text("\n".join(lines) + "\n")
    assert main(["parse", str(exp), "--json"]) == 0
    (out,) = _json.loads(capsys.readouterr().out)
    assert (out["run"]["size"], out["run"]["proxy"], out["window"]) == ("8b", "cpu-tiny", "3:6")
    from llmb.plan.flops import flops_per_sample

    expected_mfu = run.layout.gbs * flops_per_sample(small) / 0.5 / 1 / 1e11
    assert out["metrics"]["mfu"] == pytest.approx(expected_mfu)
