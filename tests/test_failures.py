"""System failures are exit 2 with the cause in words, and lose nothing that was already safe:
a full disk during a checkpoint save (a real small tmpfs where one can be mounted, an injected
ENOSPC everywhere), damaged checkpoints, a folder that cannot be created."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from llmb.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RUN = ["run", "--proxy", "cpu-tiny", "--dtype", "fp32", "--steps", "6", "--save-every", "2", "--warmup-steps", "1"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and not any("Traceback" in line for line in err), err
    return errors[0]


def _check_disk_full_run(root: Path, capsys):
    code = main(RUN)
    line = _one_error_line(capsys)
    assert code == 2 and "checkpoint of step 4 could not be written" in line and "disk full" in line, line
    (run_dir,) = [p for p in root.glob("*/*") if p.is_dir()]
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["step_00000002"], ckpts  # the earlier checkpoint intact, no partial one left
    assert (run_dir / "checkpoints" / "step_00000002" / "llmb_checkpoint.json").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["steps_completed"] == 4 and "disk full" in summary["failure"]
    return run_dir


def test_disk_full_during_a_save_keeps_the_earlier_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "exp"))
    monkeypatch.setenv("LLMB_INJECT_ENOSPC_AT_SAVE", "4")
    _check_disk_full_run(tmp_path / "exp", capsys)
    capsys.readouterr()
    assert main(["jobs", "list", "--no-refresh", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["state"] == "FAILED" and "disk full" in row["state_reason"]


def _small_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_really_full_disk(tmp_path, monkeypatch, capsys):
    """The same on a 6 MiB tmpfs, where the machine allows mounting one (root): the first save of
    the tiny fp32 proxy (3.6 MiB) fits, the second does not."""
    disk = tmp_path / "disk"
    if not _small_tmpfs(disk, "6m"):
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission): the injected ENOSPC test covers it")
    try:
        monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(disk))
        code = main(RUN)
        err = capsys.readouterr().err
        assert code == 2 and "disk full" in err and "Traceback" not in err, err
        (run_dir,) = [p for p in disk.glob("*/*") if p.is_dir()]
        names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
        assert all(".tmp-" not in n for n in names) and names, names  # no partial folder left behind
        summary = run_dir / "summary.json"
        if summary.exists():  # written when the disk still had room for it, else the error said why
            assert json.loads(summary.read_text())["status"] == "failed"
        else:
            assert "summary.json could not be written" in err
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


@pytest.mark.parametrize("damage", ["truncate", "empty", "random", "metadata"])
def test_a_damaged_checkpoint_is_one_line(damage, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(tmp_path / "exp"))
    assert main(["run", "--proxy", "cpu-tiny", "--dtype", "fp32", "--steps", "2", "--save"]) == 0
    (ckpt,) = list((tmp_path / "exp").glob("*/*/checkpoints/step_00000002"))
    (shard,) = list(ckpt.glob("*.distcp"))
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:100])
    elif damage == "empty":
        shard.write_bytes(b"")
    elif damage == "random":
        shard.write_bytes(os.urandom(shard.stat().st_size))
    else:
        (ckpt / ".metadata").write_bytes(os.urandom(64))
    capsys.readouterr()
    code = main(["run", "--proxy", "cpu-tiny", "--dtype", "fp32", "--steps", "4", "--load", str(ckpt)])
    line = _one_error_line(capsys)
    assert code == 1 and f"checkpoint {ckpt} is damaged" in line, line


def test_an_experiment_folder_that_cannot_be_created_is_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LLMB_EXPERIMENTS_DIR", str(blocker / "experiments"))
    code = main(["run", "--proxy", "cpu-tiny", "--steps", "2"])
    line = _one_error_line(capsys)
    assert code == 1 and "cannot create the experiment folder" in line and "LLMB_EXPERIMENTS_DIR" in line
