"""A checkpoint says what it holds, inside the DCP state (not only in the sidecar marker)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _save(tmp_path: Path, workload: str = "llama3.1", steps: int = 2) -> tuple[object, Path]:
    from llmb.engine.checkpoint import Checkpointer
    from llmb.engine.parallel import build_parallel
    from llmb.engine.train import Trainer
    from llmb.plan.run import RunRequest, resolve_run

    run = resolve_run(RunRequest(workload=workload, proxy="cpu-tiny", dtype="fp32", nproc=1, steps=4,
                                 overrides={"mbs": 2, "gbs": 2}))
    trainer = Trainer(run, build_parallel(run.parallel_dims), torch.device("cpu"))
    for _ in range(steps):
        trainer.step()
    Checkpointer(tmp_path / "checkpoints", 0, {}, log=lambda _: None).save(trainer.state_dict(), steps)
    return run, tmp_path / "checkpoints" / f"step_{steps:08d}"


def test_any_dcp_reader_sees_the_model_layout_and_version(tmp_path):
    import json

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from llmb import __version__
    from llmb.catalog.schema import ModelSpec
    from llmb.engine.checkpoint import read_description

    run, ckpt = _save(tmp_path)
    (ckpt / "llmb_checkpoint.json").unlink()  # the sidecar is not needed for this
    dcp_to_torch_save(str(ckpt), str(tmp_path / "plain.pt"))
    plain = torch.load(tmp_path / "plain.pt", weights_only=False)
    desc = json.loads(plain["llmb"])
    assert desc["llmb_version"] == __version__ and desc["format"] == 1
    assert ModelSpec.model_validate(desc["model"]) == run.model  # variants included
    assert desc["model"]["rope_scaling"]["factor"] == 8.0
    assert desc["layout"]["tp"] == 1 and desc["layout"]["gbs"] == 2 and desc["dtype"] == "fp32"
    assert (desc["workload"], desc["size_label"]) == ("llama3.1", "8b-cpu-tiny")
    assert read_description(ckpt) == desc


def test_a_checkpoint_of_another_architecture_with_the_same_shapes_is_refused(tmp_path):
    """Llama 3 (megatron-llama3) and Llama 3.1 proxies have identical tensors; only the RoPE
    scaling differs, which only the checkpoint's description can tell."""
    from llmb.engine.checkpoint import Checkpointer
    from llmb.engine.parallel import build_parallel
    from llmb.engine.train import DESCRIPTION_KEY, Trainer
    from llmb.errors import LlmbError
    from llmb.plan.run import RunRequest, resolve_run

    _, ckpt = _save(tmp_path)
    run = resolve_run(RunRequest(workload="megatron-llama3", proxy="cpu-tiny", dtype="fp32", nproc=1, steps=4,
                                 overrides={"mbs": 2, "gbs": 2}))
    trainer = Trainer(run, build_parallel(run.parallel_dims), torch.device("cpu"))
    state = trainer.state_dict()
    Checkpointer(None, 0, {}, log=lambda _: None).load(ckpt, state, optional=(trainer.rng_key, DESCRIPTION_KEY))
    with pytest.raises(LlmbError, match=r"another model \(llama3.1 8b-cpu-tiny\): rope_scaling"):
        trainer.load_state_dict(state)


def test_a_checkpoint_without_a_description_falls_back_to_its_experiment(tmp_path):
    """Checkpoints written before the description existed: the experiment's config.json."""
    import torch.distributed.checkpoint as dcp

    from llmb.engine.checkpoint import read_description
    from llmb.errors import LlmbError
    from llmb.records import CONFIG_FILE

    run, _ = _save(tmp_path)
    old = tmp_path / "exp" / "checkpoints" / "step_00000001"
    dcp.save({"tensors": {"model.x": torch.zeros(2)}}, checkpoint_id=str(old), no_dist=True)
    with pytest.raises(LlmbError, match="does not say which model"):
        read_description(old)
    run.config().write(tmp_path / "exp" / CONFIG_FILE)
    assert read_description(old)["model"]["rope_scaling"]["factor"] == 8.0
