"""Profiling windows, collective-trace and checkpoint options: what they produce and how they
refuse bad input (one line, exit 1)."""

from __future__ import annotations

import json

import pytest

TINY = ["--proxy", "cpu-tiny", "--dtype", "fp32", "--mbs", "2", "--gbs", "4"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_profiled_steps_write_a_trace_and_mark_timing_not_comparable(tmp_path, monkeypatch, capsys):
    from llmb.cli import main

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path))
    monkeypatch.setenv("ENABLE_PROFILE", "1")
    monkeypatch.setenv("PROFILE_START_STEP", "2")
    monkeypatch.setenv("ENABLE_NCCLTRACE", "true")
    assert main(["run", *TINY, "--steps", "4", "--warmup-steps", "1", "--profile-stop-step", "3"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "NOT COMPARABLE" in out
    (run_dir,) = tmp_path.glob("*/*")
    trace = run_dir / "profiles" / "rank0_steps2-3.json"
    events = json.loads(trace.read_text())["traceEvents"]
    assert any("aten::mm" in e.get("name", "") for e in events)  # the steps' matmuls are in it
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["timing_comparable"] is False and summary["profiled_steps"] == [2, 3]
    assert any("does nothing on CPU" in n for n in summary["notes"])
    assert json.loads((run_dir / "config.json").read_text())["options"]["profile_start_step"] == 2


def test_recipe_profile_window_is_clipped_to_a_short_run(monkeypatch, capsys):
    from llmb.cli import main

    monkeypatch.setenv("ENABLE_PROFILE", "yes")
    assert main(["run", *TINY, "--steps", "8", "--dry-run"]) == 0
    opts = json.loads(capsys.readouterr().out)["options"]
    # llama3.1's recipe profiles steps 20..25; an 8-step run profiles its last 5 + 1 steps.
    assert (opts["profile_start_step"], opts["profile_stop_step"]) == (3, 8)
    assert main(["run", *TINY, "--steps", "30", "--dry-run", "--profile"]) == 0
    opts = json.loads(capsys.readouterr().out)["options"]
    assert (opts["profile_start_step"], opts["profile_stop_step"]) == (20, 25)


@pytest.mark.parametrize(
    "argv,env,needle",
    [
        (["--keep-last", "2"], {}, "--keep-last needs checkpoints"),
        (["--save-every", "2", "--max-restarts", "1"], {}, "--max-restarts needs torchrun"),
        (["--max-restarts", "1", "--nproc", "2"], {}, "add --save-every"),
        (["--profile", "--profile-ranks", "3"], {}, "the run has ranks 0..0"),
        (["--profile", "--profile-start-step", "5", "--profile-stop-step", "2"], {}, "must lie within"),
        (["--memory-snapshot"], {}, "add --profile"),
        (["--load", "/no/such/checkpoint"], {}, "does not exist"),
        (["--resume", "--load", "x"], {}, "give one"),
        ([], {"ENABLE_CHECKPOINT": "maybe"}, "ENABLE_CHECKPOINT must be true or false"),
        (["--pg-timeout-s", "0"], {}, "--pg-timeout-s must be a finite number of seconds > 0"),
    ],
)
def test_option_mistakes_are_one_line(argv, env, needle, tmp_path, monkeypatch, capsys):
    from llmb.cli import main

    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["run", *TINY, "--steps", "4", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert needle in " ".join(err.split()) and "Traceback" not in err and len(err.splitlines()) == 1


def test_nonfinite_reason_names_what_and_when():
    from llmb.engine.health import nonfinite_reason

    assert nonfinite_reason(4, 2.5, 1.0) is None
    assert nonfinite_reason(7, 2.5, float("inf")) == (
        "non-finite grad norm inf at step 7: training stopped, the run is INVALID"
    )
