"""Integration tests against a REAL Slurm cluster: two slurmd on this host, started by
``scripts/slurm-local.sh`` (which installs Debian's Slurm and munge when missing).

What they show: a 2-node job that trains the CPU proxy with torchrun across both nodes lands in
the job store with its metrics; ``llmb jobs`` shows PENDING, RUNNING and COMPLETED along the way;
``llmb cancel`` is recorded as CANCELLED; a job that fails at run time (a DTYPE=fp8 override on a
CPU-only cluster, which only the compute node can judge) is recorded as FAILED with the reason.

When the cluster cannot be started (not root, no apt, no munge) the tests are skipped with the
script's own explanation, which pytest prints in its summary.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from llmb.cli import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-local.sh"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    base = random.Random(os.getpid()).randrange(20000, 30000, 10)
    env = {"LLMB_SLURM_DIR": str(folder), "LLMB_SLURM_CTLD_PORT": str(base), "LLMB_SLURM_NODE_PORT": str(base + 2)}
    proc = subprocess.run([str(SCRIPT), "start"], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        pytest.skip("local Slurm cluster could not start: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
    env["SLURM_CONF"] = str(folder / "slurm.conf")
    yield env
    subprocess.run([str(SCRIPT), "stop"], env={**os.environ, **env}, capture_output=True, timeout=120)


@pytest.fixture
def cluster(slurm, tmp_path, monkeypatch):
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "home"
    monkeypatch.setenv("LLMB_HOME", str(home))
    monkeypatch.delenv("LLMB_CLUSTER_CONFIG", raising=False)
    monkeypatch.delenv("LLMB_INSTALL", raising=False)
    assert main(["init", "-y", "--launcher", "slurm", "--accelerator", "cpu", "--gpus-per-node", "2",
                 "--experiments-path", str(tmp_path / "experiments"), "--time-limit", "00:10:00"]) == 0
    return tmp_path


def _cli_json(argv, capsys):
    capsys.readouterr()
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def _submit(capsys, *args):
    argv = ["submit", "llama3.1", "--size", "8b", "--proxy", "cpu-tiny", *args]
    (job,) = _cli_json(argv, capsys)
    return job


def _jobs(capsys):
    return {r["job_id"]: r for r in _cli_json(["jobs", "list"], capsys) if r.get("job_id")}


def _wait(capsys, job_id, states, timeout_s=300.0):
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = _jobs(capsys)[job_id]
        if not seen or seen[-1] != run["state"]:
            seen.append(run["state"])
        if run["state"] in states:
            return run, seen
        time.sleep(1.0)
    raise AssertionError(f"job {job_id} did not reach {states} in {timeout_s:.0f} s; states seen: {seen}")


def test_two_node_training_job_pending_running_completed(cluster, slurm, capsys):
    # Hold both nodes so the benchmark job must wait: llmb jobs then shows PENDING.
    blocker = subprocess.run(
        ["sbatch", "--parsable", "-N", "2", "--exclusive", "-o", "/dev/null", "--wrap", "sleep 8"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    job = _submit(capsys, "--scale", "4", "--steps", "6")
    assert _jobs(capsys)[job["job_id"]]["state"] == "PENDING"
    _, seen_running = _wait(capsys, job["job_id"], {"RUNNING", "COMPLETED"})
    run, seen = _wait(capsys, job["job_id"], {"COMPLETED", "FAILED", "CANCELLED"})
    states = seen_running + seen
    assert run["state"] == "COMPLETED", run
    assert "RUNNING" in states, states
    assert run["status"] == "OK" and run["gpus"] == 4
    assert run["step_time_s"] > 0 and run["tokens_per_s"] > 0 and 0 < run["mfu"] < 1
    # The job really ran on both nodes.
    out = Path(run["experiment_dir"]) / f"slurm-{job['job_id']}.out"
    assert "on node[1-2]" in out.read_text()
    summary = json.loads((Path(run["experiment_dir"]) / "summary.json").read_text())
    assert summary["world_size"] == 4 and summary["steps_completed"] == 6
    assert blocker.isdigit()


def test_cancel_is_recorded(cluster, capsys):
    job = _submit(capsys, "--scale", "2", "--steps", "5000")
    _wait(capsys, job["job_id"], {"RUNNING"})
    assert main(["cancel", job["job_id"]]) == 0
    run, _ = _wait(capsys, job["job_id"], {"CANCELLED"}, timeout_s=60)
    # A refresh after the scheduler has forgotten the job keeps CANCELLED (sacct -c agrees).
    assert main(["jobs", "refresh"]) == 0
    assert _jobs(capsys)[job["job_id"]]["state"] == "CANCELLED"


def test_runtime_failure_is_recorded_with_its_reason(cluster, capsys, monkeypatch):
    # Only the running job finds this out: its loss turns NaN at step 2 (the engine's test hook,
    # in the environment sbatch passes on), so the workers stop with exit code 3.
    monkeypatch.setenv("LLMB_INJECT_NAN_AT_STEP", "2")
    job = _submit(capsys, "--scale", "2", "--steps", "4")
    run, _ = _wait(capsys, job["job_id"], {"FAILED", "COMPLETED"})
    assert run["state"] == "FAILED"
    assert "exit " in run["state_reason"] and "non-finite loss" in run["state_reason"]


def test_fp8_on_a_cpu_cluster_is_refused_before_submission(cluster, capsys, monkeypatch):
    before = sorted((cluster / "experiments").rglob("*"))
    monkeypatch.setenv("DTYPE", "fp8")  # the recipes' env knob; the cluster configuration says cpu
    code = main(["submit", "llama3.1", "--size", "8b", "--proxy", "cpu-tiny", "--scale", "2", "--steps", "4"])
    err = capsys.readouterr().err
    assert code == 1 and "fp8 needs a CUDA GPU" in err and len(err.strip().splitlines()) == 1
    assert sorted((cluster / "experiments").rglob("*")) == before


def test_refused_submission_leaves_nothing(cluster, capsys, monkeypatch):
    before = sorted((cluster / "experiments").rglob("*"))
    monkeypatch.setenv("SBATCH_PARTITION", "nosuchpartition")  # sbatch itself refuses it
    code = main(["submit", "llama3.1", "--size", "8b", "--proxy", "cpu-tiny", "--scale", "2", "--steps", "4"])
    err = capsys.readouterr().err
    assert code == 1 and "sbatch refused the job" in err
    assert sorted((cluster / "experiments").rglob("*")) == before
    assert _cli_json(["jobs", "list", "--no-refresh"], capsys) == []


def test_torchtitan_backend_job_goes_sbatch_framework_log_store(cluster, capsys):
    """A framework backend on the local 2-node cluster: sbatch -> torchrun on each node (c10d
    rendezvous across both) -> torchtitan's own trainer (FSDP over gloo, llmb's plugin) -> its
    log in the experiment folder -> parsed by the torchtitan parser -> the job store."""
    pytest.importorskip("torchtitan")
    job = _submit(capsys, "--scale", "2", "--gpus-per-node", "1", "--steps", "4", "--cp", "1",
                  "--backend", "torchtitan", "--no-container")
    run, seen = _wait(capsys, job["job_id"], {"COMPLETED", "FAILED", "CANCELLED"}, timeout_s=400)
    exp = Path(run["experiment_dir"])
    out = (exp / f"slurm-{job['job_id']}.out").read_text()
    assert run["state"] == "COMPLETED", (run, out[-3000:])
    assert "on node[1-2]" in out
    script = (exp / "launch.sbatch").read_text()
    assert "-m torchtitan.train --job.config_file" in script and "--container-image" not in script
    assert json.loads((exp / "config.json").read_text())["backend"] == "torchtitan"
    log = (exp / "log.txt").read_text()
    assert "step:  4" in log and "Training completed" in log
    assert run["format"] == "torchtitan" and run["status"] == "OK" and run["gpus"] == 2
    assert run["tokens_per_s"] > 0
