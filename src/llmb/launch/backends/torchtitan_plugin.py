"""llmb's torchtitan plugin (imported by torchtitan through ``experimental.custom_import``).

llmb copies this file into the experiment folder as ``llmb_titan.py`` beside
``llmb_titan_model.json`` (the catalog's model constants); torchtitan imports it before it
builds anything, and it registers a train spec, ``llmb_llama3``: torchtitan's own Llama 3
spec (model, parallelize, pipeline, optimizer, loss) with

* one flavor, ``llmb``: the catalog's model (torchtitan's flavors are fixed in code);
* mock data: uniformly random token ids (the recipes' synthetic data; Megatron's
  ``--mock-data``), so neither a tokenizer nor a dataset is needed.

With ``LLMB_TITAN_DEVICE=cpu`` it points torchtitan's device at the CPU (torchtitan 0.2.2 picks
``cuda`` when no accelerator is found: ``torchtitan/tools/utils.py`` ``get_device_info``). That
is how llmb's end-to-end test trains torchtitan on a CPU with gloo.

It imports torchtitan and torch only, never llmb (the job's Python need not have llmb).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

MODEL_FILE = Path(__file__).with_name("llmb_titan_model.json")
SPEC_NAME = "llmb_llama3"


#: torchtitan 0.2.2 modules holding their own copy of ``device_type`` / ``device_module``
#: (``from torchtitan.tools.utils import device_type``), all imported before custom imports.
_DEVICE_HOLDERS = ("torchtitan.tools.utils", "torchtitan.distributed.utils", "torchtitan.distributed.parallel_dims",
                   "torchtitan.components.metrics", "torchtitan.tools.profiling")


class _CpuDevice:
    """What torchtitan asks of ``torch.cuda`` (device name and capacity, memory statistics,
    synchronisation), answered for the host: memory is the process's peak resident set."""

    @staticmethod
    def get_device_name(device=None) -> str:
        import platform

        return f"CPU ({platform.machine()})"

    @staticmethod
    def current_device() -> int:
        return 0

    @staticmethod
    def get_device_properties(device=None):
        from types import SimpleNamespace

        return SimpleNamespace(total_memory=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))

    @staticmethod
    def memory_stats(device=None) -> dict[str, int]:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        return {"active_bytes.all.peak": peak, "reserved_bytes.all.peak": peak, "num_alloc_retries": 0, "num_ooms": 0}

    @staticmethod
    def reset_peak_memory_stats(device=None) -> None:
        pass

    @staticmethod
    def empty_cache() -> None:
        pass

    @staticmethod
    def synchronize(device=None) -> None:
        pass

    @staticmethod
    def set_device(device) -> None:
        pass

    memory = torch.cpu  # tools/profiling.py only reaches it with a memory snapshot, which llmb never asks for


def _cpu() -> None:
    """Point torchtitan's device at the CPU (gloo collectives, CPU tensors)."""
    import importlib

    for name in _DEVICE_HOLDERS:
        mod = importlib.import_module(name)
        if hasattr(mod, "device_type"):
            mod.device_type = "cpu"
        if hasattr(mod, "device_module"):
            mod.device_module = _CpuDevice


class MockTokens(torch.utils.data.IterableDataset):
    """An endless stream of (inputs, labels) windows of random token ids, the same on every
    run with the same seed and data-parallel rank."""

    def __init__(self, vocab: int, seq_len: int, seed: int, rank: int):
        self.vocab, self.seq_len, self.seed, self.rank = vocab, seq_len, seed, rank

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.rank)
        while True:
            tokens = torch.randint(0, self.vocab, (self.seq_len + 1,), generator=gen)
            yield {"input": tokens[:-1]}, tokens[1:]


def _build_mock_dataloader(dp_world_size: int, dp_rank: int, tokenizer, job_config, **kwargs):
    from torchtitan.components.dataloader import ParallelAwareDataloader

    spec = json.loads(MODEL_FILE.read_text(encoding="utf-8"))
    t = job_config.training
    dataset = MockTokens(spec["vocab_size"], t.seq_len, spec.get("seed", 0), dp_rank)
    return ParallelAwareDataloader(dataset, dp_rank=dp_rank, dp_world_size=dp_world_size,
                                   batch_size=t.local_batch_size)


def _register() -> None:
    from torchtitan.models.llama3 import TransformerModelArgs
    from torchtitan.models.llama3.model.args import RoPEScalingArgs
    from torchtitan.protocols.train_spec import get_train_spec, register_train_spec

    spec = json.loads(MODEL_FILE.read_text(encoding="utf-8"))
    rope = spec.pop("rope_scaling")
    spec.pop("seed", None)
    args = TransformerModelArgs(**spec, rope_scaling_args=RoPEScalingArgs(**rope))
    base = get_train_spec("llama3")
    register_train_spec(SPEC_NAME, dataclasses.replace(
        base, model_args={"llmb": args}, build_dataloader_fn=_build_mock_dataloader, build_tokenizer_fn=None,
        build_validator_fn=None,
    ))


if os.environ.get("LLMB_TITAN_DEVICE") == "cpu":
    _cpu()
_register()
