"""A trained model in one process: built from a checkpoint (llmb DCP or ``hf:DIR``), or
exported to a transformers checkpoint.

Training runs load their ``--init-from`` weights through the trainer instead
(:meth:`llmb.engine.hooks.RunHooks.start`), shard by shard on every rank; here the model is
whole on one rank, which is what an export or a reference evaluation wants.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llmb.catalog.schema import ModelSpec
from llmb.engine.checkpoint import model_tensor_names, read_description, read_model_tensors
from llmb.engine.hf import export_hf, load_hf_weights
from llmb.engine.models.transformer import Transformer, build_model
from llmb.errors import LlmbError
from llmb.plan.pretrained import InitSource

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load_pretrained(source: InitSource, spec: ModelSpec, device: str | torch.device = "cpu") -> Transformer:
    """The model of ``spec`` (the source's architecture, at the sequence length wanted) with the
    weights of ``source``, in fp32."""
    model = build_model(spec, "meta")
    model.to_empty(device=device)
    model.init_weights(0)  # the rotary tables; every weight is overwritten below
    tensors = {f"model.{n}": p for n, p in model.named_parameters()}
    with torch.no_grad():
        if source.kind == "hf":
            load_hf_weights(tensors, spec, source.path)
        else:
            from llmb.engine.train import check_fits

            check_fits(read_description(source.path), spec)
            saved = read_model_tensors(source.path, [k.removeprefix("model.") for k in tensors])
            for key, p in tensors.items():
                value = saved[key.removeprefix("model.")]
                if tuple(value.shape) != tuple(p.shape):
                    raise LlmbError(f"{source.path}: {key} has shape {list(value.shape)}, the model {list(p.shape)}")
                p.copy_(value)
    return model


def checkpoint_spec(path: Path) -> ModelSpec:
    """The model a llmb checkpoint says it holds (:func:`llmb.engine.checkpoint.read_description`)."""
    return ModelSpec.model_validate(read_description(path)["model"])


@dataclass(frozen=True)
class Exported:
    files: tuple[str, ...]
    tensors: int
    bytes: int
    seconds: float


def export_checkpoint(path: Path, out_dir: Path, dtype: str = "fp32") -> Exported:
    """Write the llmb checkpoint at ``path`` as a transformers checkpoint folder ``out_dir``
    (``config.json`` + safetensors), reading one layer's tensors at a time."""
    t0 = time.perf_counter()
    spec = checkpoint_spec(path)
    names = model_tensor_names(path)
    files = export_hf(spec, lambda group: read_model_tensors(path, group), names, out_dir, DTYPES[dtype])
    return Exported(files=tuple(str(f) for f in files), tensors=len(names),
                    bytes=sum(f.stat().st_size for f in files), seconds=time.perf_counter() - t0)
