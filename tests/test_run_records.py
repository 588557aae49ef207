"""Run resolution (plan/run.py) and the typed run records (records.py): one resolution, checked
before anything exists, recorded so that workers and results read the same run back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmb.errors import LlmbError
from llmb.plan.run import ResolvedRun, RunRequest, resolve_run
from llmb.records import SCHEMA_VERSION, RunConfig, RunSummary


def test_config_round_trips_to_the_same_run():
    run = resolve_run(RunRequest(workload="llama4-maverick", gpu_type="h100", nproc=4, steps=12,
                                 options={"save_every": 3, "profile": True}))
    cfg = run.config()
    again = ResolvedRun.from_config(RunConfig.from_json(cfg.to_json()))
    assert again.model == run.model and again.layout == run.layout and again.derived == run.derived
    assert (again.steps, again.warmup_steps, again.window, again.lr_warmup_steps) == (
        run.steps, run.warmup_steps, run.window, run.lr_warmup_steps)
    assert again.options == run.options and again.options.profile_start_step is not None
    assert again.parallel_dims == run.parallel_dims and again.request == run.request
    assert again.config() == cfg


def test_record_says_size_and_proxy_apart_and_the_layout_that_ran():
    cfg = resolve_run(RunRequest(proxy="cpu-tiny", nproc=2, overrides={"tp": 2, "cp": 1})).config()
    assert (cfg.workload, cfg.size, cfg.proxy, cfg.size_label) == ("llama3.1", "8b", "cpu-tiny", "8b-cpu-tiny")
    assert (cfg.layout.tp, cfg.layout.cp, cfg.layout.dp) == (2, 1, 1) and cfg.backend == "llmb"
    assert cfg.hardware.gpu_type == "h100" and cfg.hardware.mfu_denominator is None  # set by the engine


def test_parallelism_notes_follow_the_overrides():
    """What ran is what the overrides made: TP given on the command line is exercised."""
    run = resolve_run(RunRequest(workload="llama4-maverick", nproc=2, overrides={"tp": 2, "pp": 1, "vp": 1}))
    assert "tp" in run.kept_parallelism and "tp" not in run.dropped_parallelism
    assert "pp" in run.dropped_parallelism and "pp" not in run.kept_parallelism
    assert not any("tp" in n.split("not exercised: ")[-1].split(", ") for n in run.notes if "not exercised" in n)


def test_records_of_another_version_or_malformed_are_one_line(tmp_path):
    cfg = resolve_run(RunRequest(proxy="cpu-tiny")).config()
    data = json.loads(cfg.to_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(LlmbError, match="schema version 2"):
        RunConfig.read(tmp_path / "config.json")
    (tmp_path / "summary.json").write_text('{"status": "complete"}')
    with pytest.raises(LlmbError, match="summary.json: .*Field required"):
        RunSummary.read(tmp_path / "summary.json")
    with pytest.raises(LlmbError, match="cannot read"):
        RunSummary.read(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "request_fields, needle",
    [
        ({"nproc": 0}, "--nproc must be a positive whole number, got 0"),
        ({"lr": float("nan")}, "learning rate (--lr) must be a finite number > 0"),
        ({"lr": -1.0}, "learning rate (--lr) must be a finite number > 0"),
        ({"lr": float("inf")}, "learning rate (--lr) must be a finite number > 0"),
        ({"seed": -1}, "--seed must be a whole number from 0"),
        ({"seed": 10**23}, "--seed must be a whole number from 0"),
        ({"steps": 10**30}, "--steps (MAX_STEPS) must be a whole number from 1 to 10,000,000"),
        ({"overrides": {"tp": 0}}, "TP must be a positive whole number"),
        ({"overrides": {"colour": 2}}, "unknown layout knob(s): colour"),
        ({"flops_convention": "bogus"}, "unknown FLOPs convention 'bogus'"),
    ],
)
def test_numeric_ranges_are_checked_in_planning(request_fields, needle):
    with pytest.raises(LlmbError) as err:
        resolve_run(RunRequest(proxy="cpu-tiny", **request_fields))
    assert needle in str(err.value)


def test_fp8_needs_cuda_where_the_run_will_run():
    with pytest.raises(LlmbError, match="fp8 needs a CUDA GPU"):
        resolve_run(RunRequest(proxy="cpu-tiny", dtype="fp8"), accelerator="cpu")
    assert resolve_run(RunRequest(proxy="cpu-tiny", dtype="fp8"), accelerator="cuda").recipe.dtype == "fp8"
    assert resolve_run(RunRequest(proxy="cpu-tiny", dtype="fp8")).recipe.dtype == "fp8"  # host unknown: planning only


def test_start_checkpoint_and_data_are_checked_before_anything_is_written(tmp_path, monkeypatch, capsys):
    from llmb.cli import main

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "exp"))
    cases = [
        (["--resume"], "--resume: no complete checkpoint in earlier runs"),
        (["--load", str(tmp_path / "nothing")], "does not exist"),
        (["--data", str(tmp_path / "nodata")], "no indexed dataset"),
        (["--nproc", "0"], "--nproc must be a positive whole number"),
        (["--lr", "nan"], "finite number"),
        (["--dtype", "fp8"], "fp8 needs a CUDA GPU"),
    ]
    for argv, needle in cases:
        assert main(["run", "--proxy", "cpu-tiny", "--steps", "2", *argv]) == 1, argv
        err = capsys.readouterr().err.strip()
        assert needle in " ".join(err.split()) and len(err.splitlines()) == 1, (argv, err)
    assert not (tmp_path / "exp").exists()


def test_resume_is_resolved_to_the_checkpoint_it_starts_from(tmp_path):
    from llmb.checkpoint_files import MARKER
    from llmb.paths import experiment_name

    folder = tmp_path / experiment_name("llama3.1", "8b-cpu-tiny", "bf16", 1) / "20260101T000000000Z"
    ckpt = folder / "checkpoints" / "step_00000002"
    ckpt.mkdir(parents=True)
    (ckpt / ".metadata").write_text("")
    (ckpt / MARKER).write_text("{}")
    run = resolve_run(RunRequest(proxy="cpu-tiny", options={"resume": True}), experiments_root=tmp_path)
    assert run.options.start_checkpoint == str(ckpt.resolve())
    assert resolve_run(RunRequest(proxy="cpu-tiny", options={"load": str(folder)})).options.start_checkpoint == str(
        ckpt.resolve())


def test_dry_run_prints_the_record_it_would_write(capsys):
    from llmb.cli import main

    assert main(["run", "--proxy", "cpu-tiny", "--dry-run"]) == 0
    cfg = RunConfig.from_json(capsys.readouterr().out)
    assert cfg.size_label == "8b-cpu-tiny" and cfg.world_size == 1


def test_submit_records_the_run_the_workers_execute(tmp_path, monkeypatch):
    """A submission's folder holds the same record a local run's does, options included."""
    from llmb.launch import submit as sub
    from llmb.launch.cluster import ClusterConfig
    from llmb.launch.knobs import resolve_knobs

    cluster = ClusterConfig(install_path=str(tmp_path), experiments_path=str(tmp_path / "exp"), accelerator="cpu",
                            gpus_per_node=2)
    (planned,) = sub.planned_from(sub_catalog(), "llama3.1", "8b", "bf16", [4], 1, None, "cpu-tiny", {})
    knobs, _ = resolve_knobs({"profile": True}, {})
    prepared = sub.write(sub.prepare(planned, cluster, knobs, {}))
    cfg = RunConfig.read(Path(prepared.experiment_dir) / "config.json")
    assert cfg.world_size == 4 and cfg.options.profile and cfg.options.profile_start_step is not None
    assert "-m llmb.engine.worker" in prepared.script and "OMP_NUM_THREADS=1" in prepared.script
    fp8 = sub.planned_from(sub_catalog(), "llama3.1", "8b", "fp8", [4], 1, None, "cpu-tiny", {})[0]
    with pytest.raises(LlmbError, match="fp8 needs a CUDA GPU"):
        sub.prepare(fp8, cluster, {}, {})


def sub_catalog():
    from llmb.catalog import default_catalog

    return default_catalog()


def test_worker_environment_is_one_policy():
    from llmb.launch.local import worker_env

    assert worker_env(2, cores=8) == {"OMP_NUM_THREADS": "4"}
    assert worker_env(4) == {"OMP_NUM_THREADS": "1"}
    assert worker_env(2, max_restarts=1, cores=2)["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"
