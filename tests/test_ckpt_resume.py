"""Checkpoints: 10 steps straight equal 5 steps + save + load + 5 steps (fp32, 1e-6), on the
same world size and when the second half runs on another one (DCP resharding of FSDP2 shards).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import pytest
import torch
from _ranks import start_ranks

STEPS, SAVE_AT = 10, 5
TOL = 1e-6
BATCH = {"mbs": 2, "gbs": 4}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(nproc: int, workload: str = "llama3.1", overrides: dict | None = None):
    from llmb.plan.run import RunRequest, resolve_run

    return resolve_run(RunRequest(workload=workload, proxy="cpu-tiny", dtype="fp32", nproc=nproc, steps=STEPS,
                                  overrides={**BATCH, **(overrides or {})}))


def _trainer(nproc: int, workload: str = "llama3.1", overrides: dict | None = None):
    from llmb.engine.parallel import build_parallel
    from llmb.engine.train import Trainer

    run = _run(nproc, workload, overrides)
    return run, Trainer(run, build_parallel(run.parallel_dims), torch.device("cpu"))


def _straight(nproc: int, exp_dir: Path, workload: str = "llama3.1", overrides: dict | None = None) -> list[float]:
    """10 steps, saving after step 5 (saving must not change the run)."""
    from llmb.engine.checkpoint import Checkpointer

    run, trainer = _trainer(nproc, workload, overrides)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    ckpt = Checkpointer(exp_dir / "checkpoints", rank, {"workload": run.recipe.workload.name}, log=lambda _: None)
    losses = []
    for step in range(1, STEPS + 1):
        losses.append(trainer.step().loss)
        if step == SAVE_AT:
            ckpt.save(trainer.state_dict(), step)
    return losses


def _resumed(nproc: int, checkpoint: Path, workload: str = "llama3.1", overrides: dict | None = None) -> list[float]:
    """Load step 5 into a fresh model and train steps 6..10."""
    from llmb.engine.checkpoint import Checkpointer

    run, trainer = _trainer(nproc, workload, overrides)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    state = trainer.state_dict()
    Checkpointer(None, rank, {}, log=lambda _: None).load(checkpoint, state, optional=(trainer.rng_key,))
    trainer.load_state_dict(state)
    assert trainer.completed_steps == SAVE_AT
    return [trainer.step().loss for _ in range(SAVE_AT + 1, STEPS + 1)]


def _worker(rank, port, out_dir, one_rank_ckpt):
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        straight = _straight(2, Path(out_dir) / "two")
        from_one = _resumed(2, Path(one_rank_ckpt))
        if rank == 0:
            (Path(out_dir) / "two.json").write_text(json.dumps({"straight": straight, "from_one": from_one}))
    finally:
        dist.destroy_process_group()


def _ep_worker(rank, port, out_dir, name, overrides):
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        losses = _straight(2, Path(out_dir) / name, "llama4-maverick", overrides)
        if rank == 0:
            (Path(out_dir) / f"{name}.json").write_text(json.dumps(losses))
    finally:
        dist.destroy_process_group()


def _close(got: list[float], want: list[float], what: str) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want), start=SAVE_AT + 1):
        assert abs(g - w) <= TOL, f"{what}, step {i}: {g!r} vs {w!r}"


def test_resume_on_one_rank_repeats_the_losses(tmp_path):
    from llmb.checkpoint_files import complete_checkpoints

    ref = _straight(1, tmp_path)
    (ckpt,) = [p for _, p in complete_checkpoints(tmp_path / "checkpoints")]
    assert ckpt.name == "step_00000005" and sorted(f.suffix for f in ckpt.glob("*.distcp")) == [".distcp"]
    got = _resumed(1, ckpt)
    _close(got, ref[SAVE_AT:], "1 rank -> 1 rank")
    assert ref[0] != ref[-1]  # the run learns: equal losses are not trivially equal


@pytest.mark.slow
def test_resume_across_world_sizes(tmp_path):
    one = tmp_path / "one"
    ref = _straight(1, one)
    one_ckpt = one / "checkpoints" / "step_00000005"
    start_ranks(_worker, (_free_port(), str(tmp_path), str(one_ckpt)), 2)
    two = json.loads((tmp_path / "two.json").read_text())
    _close(two["straight"][SAVE_AT:], ref[SAVE_AT:], "2 ranks straight vs 1 rank straight")
    _close(two["from_one"], two["straight"][SAVE_AT:], "1 rank -> 2 ranks")
    two_ckpt = tmp_path / "two" / "checkpoints" / "step_00000005"
    marker = json.loads((two_ckpt / "llmb_checkpoint.json").read_text())
    assert marker["world_size"] == 2 and marker["step"] == SAVE_AT
    assert len(list(two_ckpt.glob("*.distcp"))) == 2  # each rank wrote its FSDP shard
    _close(_resumed(1, two_ckpt), ref[SAVE_AT:], "2 ranks -> 1 rank")


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from llmb.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def test_cli_save_every_keep_last_and_load(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path))
    base = ["run", "--proxy", "cpu-tiny", "--dtype", "fp32", "--steps", str(STEPS), "--warmup-steps", "1", "--json",
            "--gbs", "4"]
    code, _ = _cli(base + ["--save-every", "3", "--keep-last", "2", "--async-save"], capsys)
    assert code == 0
    (first,) = (tmp_path / "llama3.1_8b-cpu-tiny_fp32_gpus1").iterdir()
    names = sorted(p.name for p in (first / "checkpoints").iterdir())
    assert names == ["step_00000006", "step_00000009"]  # 3 was pruned, nothing half-written left
    log = (first / "log.txt").read_text()
    assert "Global Checkpoint Save : Rank: 0 : Iteration: 9 :" in log and "Async save duration" in log

    code, _ = _cli(base + ["--load", str(first / "checkpoints" / "step_00000006")], capsys)
    assert code == 0
    second = max((tmp_path / "llama3.1_8b-cpu-tiny_fp32_gpus1").iterdir())
    ref, got = _losses(first), _losses(second)
    assert sorted(got) == list(range(7, STEPS + 1))
    for step in got:
        assert abs(got[step] - ref[step]) <= TOL, step
    summary = json.loads((second / "summary.json").read_text())
    assert summary["resumed_from"]["step"] == 6 and summary["steps_completed"] == 4
    assert "Time spent in load_checkpoint" in (second / "log.txt").read_text()

    # --resume finds the newest published checkpoint of the experiment's earlier runs (step 9).
    code, _ = _cli(base + ["--resume", "--save"], capsys)
    assert code == 0
    third = max((tmp_path / "llama3.1_8b-cpu-tiny_fp32_gpus1").iterdir())
    assert sorted(_losses(third)) == [10]
    assert abs(_losses(third)[10] - ref[10]) <= TOL
    assert (third / "checkpoints" / "step_00000010" / "llmb_checkpoint.json").is_file()


def test_checkpoint_of_another_model_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path))
    _straight(1, tmp_path / "x")
    code, err = _cli(["run", "nemotron4", "--proxy", "cpu-tiny", "--dtype", "fp32", "--steps", "6",
                      "--load", str(tmp_path / "x")], capsys)
    assert code == 1 and "does not fit this model" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_loader_ignores_incomplete_checkpoints(tmp_path):
    from llmb.checkpoint_files import MARKER, latest_checkpoint, resolve_load_path
    from llmb.errors import LlmbError

    root = tmp_path / "checkpoints"
    for name, files in [("step_00000002", [".metadata", MARKER]), ("step_00000004.tmp-1-2", [".metadata"]),
                        ("step_00000006", [".metadata"])]:  # 6: renamed by hand, no marker
        (root / name).mkdir(parents=True)
        for f in files:
            (root / name / f).write_text("{}")
    assert latest_checkpoint(root).name == "step_00000002"
    assert resolve_load_path(tmp_path).name == "step_00000002"
    for bad in ("step_00000004.tmp-1-2", "step_00000006"):
        with pytest.raises(LlmbError, match="not a complete checkpoint"):
            resolve_load_path(root / bad)
    with tempfile.TemporaryDirectory() as empty, pytest.raises(LlmbError, match="no complete checkpoint"):
        resolve_load_path(empty)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,overrides",
    [
        ("ep2", {"pp": 1, "ep": 2}),  # experts split over EP=2, FSDP over DP=2
        ("tp2-etp2", {"pp": 1, "tp": 2, "etp": 2, "ep": 1}),  # each expert's width split over TP
    ],
)
def test_expert_parallel_checkpoint_loads_on_one_rank(tmp_path, name, overrides):
    """MoE: experts split over 2 ranks, saved, then loaded by one process."""
    start_ranks(_ep_worker, (_free_port(), str(tmp_path), name, overrides), 2)
    straight = json.loads((tmp_path / f"{name}.json").read_text())
    ckpt = tmp_path / name / "checkpoints" / "step_00000005"
    got = _resumed(1, ckpt, "llama4-maverick")
    _close(got, straight[SAVE_AT:], f"{name} -> 1 rank")


def test_resume_on_real_data_continues_the_same_token_stream(tmp_path, monkeypatch, capsys):
    """With --data the checkpoint carries the data position: 2 + save + load + 2 steps see the
    same samples, so the final loss equals a straight 4-step run's."""
    import json

    from llmb.cli import main

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "exp"))
    # GA 2 of one sample each: the position moves inside a step as well as across steps.
    args = ["run", "--proxy", "cpu-small", "--dtype", "fp32", "--data", "sample", "--steps", "4", "--gbs", "2",
            "--mbs", "1", "--json"]

    def run(*extra):
        capsys.readouterr()
        assert main([*args, *extra]) == 0
        return json.loads(capsys.readouterr().out)

    straight = run()
    saved = run("--save-every", "2")
    checkpoint = next((tmp_path / "exp").glob(f"*/{Path(saved['experiment_dir']).name}/checkpoints/step_00000002"))
    resumed = run("--load", str(checkpoint))
    assert resumed["steps_completed"] == 2
    assert resumed["final_loss"] == pytest.approx(straight["final_loss"], rel=1e-6)
