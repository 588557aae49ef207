"""The main flow end to end, as a new user meets it: `llmb run` -> `llmb jobs list` ->
`llmb compare` -> `llmb report`, for CPU proxy runs (no published baseline) and for a real
framework log (NeMo 2, compared with its published baseline). Every run lands in the store by
itself; no record makes a command fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmb.cli import main

LOGS = Path(__file__).parent / "fixtures" / "logs"


def _json(capsys, argv, code=0):
    capsys.readouterr()
    assert main([*argv, "--json"]) == code, capsys.readouterr()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "experiments"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_proxy_runs_reach_the_store_compare_and_report(here, capsys, monkeypatch):
    run = ["run", "--proxy", "cpu-tiny", "--dtype", "fp32", "--steps", "4", "--warmup-steps", "1"]
    first = _json(capsys, run)
    second = _json(capsys, run)
    monkeypatch.setenv("LLMB_INJECT_NAN_AT_STEP", "2")
    invalid = _json(capsys, run, code=3)
    assert (first["status"], second["status"], invalid["status"]) == ("complete", "complete", "invalid")

    jobs = {r["run_id"]: r for r in _json(capsys, ["jobs", "list", "--no-refresh"])}
    assert len(jobs) == 3
    for r in jobs.values():
        assert (r["workload"], r["size"], r["proxy"], r["device"], r["cluster"]) == (
            "llama3.1", "8b", "cpu-tiny", "cpu", "local")
    states = sorted((r["state"], r["status"]) for r in jobs.values())
    assert states == [("COMPLETED", "OK"), ("COMPLETED", "OK"), ("FAILED", "INVALID")]
    (bad,) = [r for r in jobs.values() if r["state"] == "FAILED"]
    assert "non-finite loss" in bad["state_reason"]

    out = _json(capsys, ["compare"])
    verdicts = [c["verdict"] for c in out["comparisons"]]
    # oldest first: nothing to compare the first with, the second against the first, the
    # invalid one never passes
    assert verdicts[0] == "N/A" and "cpu-tiny proxy" in out["comparisons"][0]["notes"][0]
    assert verdicts[1] in ("PASS", "FAIL") and "median of the last 1" in out["comparisons"][1]["reference"]
    assert verdicts[2] == "FAIL"

    rep = _json(capsys, ["report", "--out", str(here / "report")])
    md = Path(rep["markdown"]).read_text()
    assert "## llama3.1 8b-cpu-tiny FP32 on CPU" in md and "1x CPU ranks" in md and "None" not in md
    assert len(rep["plots"]) >= 2 and all(Path(p).is_file() for p in rep["plots"])


def test_a_framework_log_reaches_the_store_compare_and_report(here, capsys):
    folder = here / "experiments" / "pretrain_llama3.1_8b_bf16_8"
    folder.mkdir(parents=True)
    shutil.copy(LOGS / "nemo2_llama31_8b_bf16.log", folder / "log-llama.out")
    _json(capsys, ["run", "--proxy", "cpu-tiny", "--dtype", "fp32", "--steps", "3"])  # a proxy next to it
    (imported,) = _json(capsys, ["import", str(folder)])
    assert imported["status"] == "OK"
    out = _json(capsys, ["compare"])
    by_id = {c["run_id"]: c for c in out["comparisons"]}
    nemo = by_id[imported["run_id"]]
    assert nemo["verdict"] == "PASS" and nemo["reference"].startswith("baseline")
    assert len(by_id) == 2 and all(c["verdict"] in ("PASS", "FAIL", "N/A") for c in by_id.values())
    rep = _json(capsys, ["report", "--out", str(here / "report")])
    md = Path(rep["markdown"]).read_text()
    assert "llama3.1 8b BF16 on H100" in md and "vs published" in md and "8b-cpu-tiny" in md
