"""A trained model in one process: built from a checkpoint (llmb DCP or ``hf:DIR``), exported
to a transformers checkpoint, or scored on a dataset (``llmb eval``).

Training runs load their ``--init-from`` weights through the trainer instead
(:meth:`llmb.engine.hooks.RunHooks.start`), shard by shard on every rank; here the model is
whole on one rank, which is what an export or a reference evaluation wants.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from llmb.catalog.schema import ModelSpec
from llmb.engine.checkpoint import model_tensor_names, read_description, read_model_tensors
from llmb.engine.hf import export_hf, load_hf_weights
from llmb.engine.models.transformer import Transformer, build_model, upcast_attention_on_cpu
from llmb.engine.parallel import cast_parameters
from llmb.errors import LlmbError
from llmb.plan.pretrained import EvalPlan, InitSource

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


@dataclass(frozen=True)
class Evaluation:
    loss: float  # mean next-token cross-entropy, nats
    tokens_scored: int
    windows: int
    seq_len: int
    dtype: str
    seconds: float

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < 700 else math.inf

    def as_dict(self) -> dict[str, float | int | str]:
        return {"loss": self.loss, "perplexity": self.perplexity, "tokens_scored": self.tokens_scored,
                "windows": self.windows, "seq_len": self.seq_len, "dtype": self.dtype, "seconds": self.seconds}


@torch.no_grad()
def evaluate(plan: EvalPlan, device: str | torch.device = "cpu") -> Evaluation:
    """The mean next-token loss of ``plan``'s checkpoint over its windows (see
    :class:`~llmb.plan.pretrained.EvalPlan`): summed in float64 over every prediction, then
    divided by their number."""
    from llmb.data import IndexedDataset

    t0 = time.perf_counter()
    model = load_pretrained(plan.source, plan.model, device)
    if plan.dtype != "fp32":
        cast_parameters(model, DTYPES[plan.dtype])
        if torch.device(device).type == "cpu":
            upcast_attention_on_cpu(model)  # as training does: fp32 attention cores on CPU
    model.eval()
    stream = IndexedDataset(plan.data).tokens
    s = plan.seq_len
    total = torch.zeros((), dtype=torch.float64)
    for first in range(0, plan.batches, plan.micro_batch):
        ks = range(first, min(first + plan.micro_batch, plan.batches))
        windows = np.stack([np.asarray(stream[k * s : k * s + s + 1], dtype=np.int64) for k in ks])
        batch = torch.from_numpy(windows).to(device)
        logits = model(batch[:, :s]).float()
        total += F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").double()
    scored = plan.batches * s
    return Evaluation(loss=float(total) / scored, tokens_scored=scored, windows=plan.batches, seq_len=s,
                      dtype=plan.dtype, seconds=time.perf_counter() - t0)
