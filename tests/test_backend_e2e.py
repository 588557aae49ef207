"""torchtitan, really trained on this CPU through ``llmb run --backend torchtitan``.

torchtitan 0.2.2 (the PyPI wheel) runs its own trainer, model, FSDP2 and logging; llmb's
plugin (``llmb/launch/backends/files/llmb_titan.py.txt``) gives it the catalog's model shrunk
to the cpu-tiny proxy, mock tokens and a CPU device (gloo). What this proves: the generated TOML
starts torchtitan's real training loop on 2 ranks (FSDP over gloo), its log is parsed by the
torchtitan parser (format given, not guessed), TensorBoard files are written, and the run is in
the job store with its steps, exactly like an engine run.

What does not run on a CPU (checked here too, so the README's claims stay true): torchtitan's
context parallelism (no CPU SDPA sharding strategy in torch 2.13).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmb.cli import main

pytestmark = pytest.mark.slow

TITAN = ["run", "llama3.1", "--backend", "torchtitan", "--proxy", "cpu-tiny", "--nproc", "2", "--steps", "6"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    pytest.importorskip("torchtitan")
    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "experiments"))
    monkeypatch.delenv("LLMB_CLUSTER_CONFIG", raising=False)
    monkeypatch.setenv("LLMB_INSTALL", str(tmp_path / "install"))
    return tmp_path


def _json(argv, capsys):
    capsys.readouterr()
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip().startswith(("{", "[")) else out


def test_torchtitan_trains_on_cpu_and_enters_the_store(env, capsys):
    code, out = _json([*TITAN, "--cp", "1"], capsys)
    assert code == 0, out
    exp = Path(out["experiment_dir"])
    # The folder: llmb's record, the generated config, the plugin, the exact command, the log.
    config = json.loads((exp / "config.json").read_text())
    assert config["backend"] == "torchtitan" and config["world_size"] == 2
    assert (exp / "torchtitan.toml").is_file() and (exp / "llmb_titan.py").is_file()
    launch = json.loads((exp / "launch.json").read_text())
    assert launch["log_format"] == "torchtitan" and launch["command"][:2] == ["-m", "torchtitan.train"]
    assert "torch.distributed.run" in (exp / "command.sh").read_text()
    log = (exp / "log.txt").read_text()
    steps = [int(m) for m in re.findall(r"step:\s+(\d+)\s+loss:", log)]
    assert sorted(set(steps)) == [1, 2, 3, 4, 5, 6], steps
    assert "Training completed" in log
    assert list((exp / "torchtitan" / "tb").rglob("events.out.tfevents.*")), "no TensorBoard events"
    # The parsed result: torchtitan's parser, its steps and throughput.
    result = out["result"]
    assert result["format"] == "torchtitan" and result["steps_found"] == 6 and result["status"] == "OK"
    assert result["stats"]["tokens_per_s_per_gpu"]["mean"] > 0
    # The job store, as for an engine run.
    code, jobs = _json(["jobs", "list"], capsys)
    assert code == 0
    (row,) = [r for r in jobs if r["experiment_dir"] == str(exp.resolve())]
    assert row["format"] == "torchtitan" and row["state"] == "COMPLETED" and row["status"] == "OK"
    assert row["gpus"] == 2 and row["proxy"] == "cpu-tiny" and row["tokens_per_s"] > 0


def test_torchtitans_context_parallelism_does_not_run_on_cpu(env, capsys):
    """The proxy's layout for 2 ranks keeps the recipe's CP 2: torchtitan fails on CPU, the run
    is recorded FAILED with exit code 2 (a system failure, not a user mistake)."""
    code, _ = _json(TITAN, capsys)
    assert code == 2
    (exp,) = (env / "experiments").glob("*/*")
    log = (exp / "log.txt").read_text()
    assert "does not have a sharding strategy registered" in log
    code, jobs = _json(["jobs", "list"], capsys)
    (row,) = [r for r in jobs if r["experiment_dir"] == str(exp.resolve())]
    assert row["state"] == "FAILED" and "torchtitan exited with code 1" in row["state_reason"]


@pytest.mark.parametrize("layout, mesh", [(["--tp", "2"], "pp=1, dp_replicate=1, dp_shard=1, cp=1, tp=2"),
                                          (["--pp", "2"], "pp=2, dp_replicate=1, dp_shard=1, cp=1, tp=1")])
def test_torchtitan_runs_the_tomls_tp_and_pp_on_cpu(env, capsys, layout, mesh):
    """The TOML's degrees are what torchtitan builds (its own mesh log line), and they train."""
    code, out = _json([*TITAN, "--cp", "1", "--steps", "4", *layout], capsys)
    assert code == 0, out
    log = (Path(out["experiment_dir"]) / "log.txt").read_text()
    assert f"Building device mesh with parallelism: {mesh}" in log
    assert out["result"]["steps_found"] == 4 and out["result"]["status"] == "OK"
    if "--pp" in layout:  # GA 4 micro-batches of MBS 2 become the pipeline's microbatches
        assert "Using pipeline schedule 1F1B with 4 microbatches and 2 stages." in log
