"""Faults: a save killed half-way, a rank killed mid-run under torchrun elastic restarts, and a
NaN loss. The kills are real SIGKILLs, placed by test hooks (llmb.engine.health) so they hit
the moment that matters every time instead of depending on timing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TOL = 1e-6
LLMB = [sys.executable, "-c", "import sys; from llmb.cli import run; sys.argv[0] = 'llmb'; run()"]
TINY = ["--proxy", "cpu-tiny", "--dtype", "fp32", "--mbs", "2", "--gbs", "4", "--warmup-steps", "1"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reference_losses(steps: int) -> list[float]:
    """The uninterrupted run: one process, same seed, batch and schedule."""
    from llmb.plan.run import RunRequest, resolve_run
    from llmb.engine.parallel import build_parallel
    from llmb.engine.train import Trainer

    run = resolve_run(RunRequest(proxy="cpu-tiny", dtype="fp32", nproc=1, steps=steps, overrides={"mbs": 2, "gbs": 4}))
    trainer = Trainer(run, build_parallel(run.parallel_dims), torch.device("cpu"))
    return [trainer.step().loss for _ in range(steps)]


def _llmb(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "LLMB_EXPERIMENTS_DIR": str(tmp_path / "exp"), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(LLMB + args, env=full_env, capture_output=True, text=True, timeout=600)


def _run_dir(tmp_path: Path, nproc: int) -> Path:
    (run_dir,) = (tmp_path / "exp" / f"llama3.1_8b-cpu-tiny_fp32_gpus{nproc}").iterdir()
    return run_dir


def _last_losses(run_dir: Path) -> dict[int, float]:
    """Loss per step; a step run again after a restart counts with its last value."""
    return {r["step"]: r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def test_save_killed_midway_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch, capsys):
    proc = _llmb(["run", *TINY, "--steps", "6", "--save-every", "2"], tmp_path, LLMB_KILL_DURING_SAVE_AT_STEP="4")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run_dir = _run_dir(tmp_path, 1)
    ckpts = run_dir / "checkpoints"
    names = sorted(p.name for p in ckpts.iterdir())
    assert names[0] == "step_00000002" and names[1].startswith("step_00000004.tmp-") and len(names) == 2
    # Killed after DCP finished writing (.metadata is there) but before llmb published it.
    assert (ckpts / names[1] / ".metadata").is_file() and not (ckpts / names[1] / "llmb_checkpoint.json").exists()

    from llmb.cli import main

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "resumed"))
    assert main(["run", *TINY, "--steps", "6", "--load", str(run_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["resumed_from"]["step"] == 2 and summary["steps_completed"] == 4
    ref = _reference_losses(6)
    (resumed,) = (tmp_path / "resumed" / "llama3.1_8b-cpu-tiny_fp32_gpus1").iterdir()
    for step, loss in _last_losses(resumed).items():
        assert abs(loss - ref[step - 1]) <= TOL, step


@pytest.mark.slow
def test_killed_rank_is_survived_by_elastic_restart(tmp_path):
    steps = 8
    proc = _llmb(["run", *TINY, "--nproc", "2", "--steps", str(steps), "--save-every", "3", "--max-restarts", "1",
                  "--json"], tmp_path, LLMB_KILL_RANK_AT_STEP="1:5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert "failed (exitcode: -9) local_rank: 1" in proc.stderr  # rank 1 really died of SIGKILL
    assert summary["status"] == "complete"
    assert summary["resumed_from"]["step"] == 3 and summary["resumed_from"]["restart_count"] == 1
    ref = _reference_losses(steps)
    assert abs(summary["final_loss"] - ref[-1]) <= TOL, (summary["final_loss"], ref[-1])
    losses = _last_losses(_run_dir(tmp_path, 2))
    assert sorted(losses) == list(range(1, steps + 1))
    for step, loss in losses.items():
        assert abs(loss - ref[step - 1]) <= TOL, step


def test_nan_loss_stops_the_run_invalid(tmp_path, monkeypatch, capsys):
    from llmb.cli import main

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path))
    monkeypatch.setenv("LLMB_INJECT_NAN_AT_STEP", "3")
    code = main(["run", *TINY, "--steps", "6", "--save-every", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 3
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "non-finite loss nan at step 3" in errors[0] and "INVALID" in errors[0]
    assert "Traceback" not in err
    summary = json.loads(out)
    assert summary["status"] == "invalid" and summary["steps_completed"] == 3
    run_dir = _run_dir_any(tmp_path)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "invalid"
    # The checkpoint before the NaN is kept; nothing is saved after it.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_00000002"]


def _run_dir_any(root: Path) -> Path:
    (run_dir,) = [p for p in root.glob("*/*") if (p / "summary.json").is_file()]
    return run_dir


def _hang_worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    import time

    import torch.distributed as dist

    from llmb.engine.health import failure_line
    from llmb.engine.runner import init_distributed

    # Start together (imports take seconds on a busy machine; the rendezvous has the same
    # short timeout as the collectives).
    Path(out_dir, f"ready{rank}").touch()
    while not all(Path(out_dir, f"ready{r}").exists() for r in range(2)):
        time.sleep(0.05)
    init_distributed(torch.device("cpu"), timeout_s=HANG_TIMEOUT_S)
    line = "completed"
    try:
        if rank == 1:
            time.sleep(2.5 * HANG_TIMEOUT_S)  # rank 1 "hangs": rank 0's all-reduce waits for it
        dist.all_reduce(torch.ones(1))
    except RuntimeError as exc:
        line = failure_line(exc, HANG_TIMEOUT_S) or f"unrecognized: {exc}"
    Path(out_dir, f"rank{rank}.txt").write_text(line)
    # The timed-out receive leaves a gloo thread running; C++ teardown at exit would abort on
    # it ("terminate called without an active exception"), so leave without teardown.
    os._exit(0)


HANG_TIMEOUT_S = 5.0


@pytest.mark.slow
def test_hung_collective_fails_after_the_process_group_timeout(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_hang_worker, args=(port, str(tmp_path)), nprocs=2)
    rank0 = (tmp_path / "rank0.txt").read_text()
    assert rank0.startswith("a collective did not complete within the process-group timeout (5 s)"), rank0
