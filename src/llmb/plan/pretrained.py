"""Where a model's starting weights come from (``--init-from``), checked before anything runs.

Two sources:

- ``hf:DIR``: a Hugging Face transformers checkpoint folder (``config.json`` and
  ``model.safetensors`` or shards with ``model.safetensors.index.json``). Its config is read
  into a :class:`~llmb.catalog.schema.ModelSpec` (:mod:`llmb.catalog.hf_config`); a training
  run checks it against the run's model, ``llmb eval`` builds the model from it.
- a llmb checkpoint (a ``step_N`` folder, a ``checkpoints/`` folder or an experiment folder:
  its latest complete checkpoint). Its model is what its completion marker records (the
  engine re-checks against the description inside the DCP state).

Pure Python (no torch): ``llmb run --init-from`` and ``llmb eval`` refuse a bad source with one
line before any folder exists or any process starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llmb.catalog.hf_config import HF_PREFIX, architecture_differences, read_hf_config, spec_from_hf
from llmb.catalog.schema import ModelSpec
from llmb.errors import LlmbError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


@dataclass(frozen=True)
class InitSource:
    kind: str  # "hf" or "llmb"
    path: Path  # absolute: the HF folder, or the complete llmb checkpoint folder

    @property
    def text(self) -> str:
        """How a run records it (``hf:/abs/dir`` or ``/abs/step_N``)."""
        return f"{HF_PREFIX}{self.path}" if self.kind == "hf" else str(self.path)

    def model(self, seq_len: int | None = None) -> ModelSpec:
        """The model the source holds (at ``seq_len`` tokens per sample; default: the source's
        own, a transformers config's ``max_position_embeddings``)."""
        if self.kind == "hf":
            return spec_from_hf(read_hf_config(self.path), seq_len, name=f"{self.text}/config.json")
        spec = checkpoint_model(self.path)
        return spec if seq_len is None else spec.model_copy(update={"seq_len": seq_len})


def checkpoint_model(path: Path) -> ModelSpec:
    """The model a complete llmb checkpoint holds, as its completion marker records it (or, for
    a checkpoint older than that, its experiment's ``config.json``)."""
    from llmb.checkpoint_files import MARKER
    from llmb.records import CONFIG_FILE, RunConfig

    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LlmbError(f"{path / MARKER}: cannot read it ({type(exc).__name__})") from None
    if "model" in marker:
        return ModelSpec.model_validate(marker["model"])
    config = path.parent.parent / CONFIG_FILE
    if not config.is_file():
        raise LlmbError(f"{path}: the checkpoint does not say which model it holds, and no {CONFIG_FILE} is beside it")
    return RunConfig.read(config).model


def parse_init_source(text: str) -> InitSource:
    """The source ``text`` names; refused with one line when it is unusable."""
    if text.startswith(HF_PREFIX):
        path = Path(text[len(HF_PREFIX):]).expanduser().resolve()
        read_hf_config(path)
        if not any((path / f).is_file() for f in WEIGHT_FILES):
            raise LlmbError(f"{HF_PREFIX}{path}: no {' or '.join(WEIGHT_FILES)} (the weights)")
        return InitSource("hf", path)
    from llmb.checkpoint_files import resolve_load_path

    return InitSource("llmb", resolve_load_path(text).resolve())


def check_source_fits(source: InitSource, model: ModelSpec) -> None:
    """Refuse a source whose architecture is not ``model``'s (the sequence length may differ)."""
    diffs = architecture_differences(source.model(model.seq_len), model)
    if diffs:
        raise LlmbError(
            f"--init-from {source.text} is another model than this run's: "
            + "; ".join(diffs[:4]) + (f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else "")
            + " (source vs run)"
        )


@dataclass(frozen=True)
class EvalPlan:
    """``llmb eval``: the mean next-token loss of ``source``'s model over the first ``batches``
    windows of ``seq_len + 1`` tokens of ``data``'s token stream (window ``k`` starts at token
    ``k * seq_len``: consecutive windows share one token, so every token after the first is
    predicted exactly once, as in training), in order, in ``dtype``."""

    source: InitSource
    model: ModelSpec  # at seq_len
    data: Path  # the dataset prefix
    batches: int
    seq_len: int
    dtype: str
    micro_batch: int

    @property
    def tokens_needed(self) -> int:
        return self.batches * self.seq_len + 1


def resolve_eval(init_from: str, data: str, batches: int, seq_len: int | None = None, dtype: str = "fp32",
                 micro_batch: int = 1) -> EvalPlan:
    """Check an evaluation before it loads anything; every mistake is one line."""
    from llmb.data import SAMPLE, open_dataset, sample_prefix

    for name, value in (("--batches", batches), ("--seq-len", seq_len), ("--mbs", micro_batch)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise LlmbError(f"{name} must be a positive whole number, got {value!r}")
    if dtype not in ("fp32", "bf16"):
        raise LlmbError(f"--dtype must be fp32 or bf16 for an evaluation, got {dtype!r}")
    source = parse_init_source(init_from)
    model = source.model(seq_len)
    dataset = open_dataset(data, model.vocab)
    prefix = sample_prefix() if data == SAMPLE else Path(data).expanduser().resolve()
    plan = EvalPlan(source=source, model=model, data=prefix, batches=batches, seq_len=model.seq_len, dtype=dtype,
                    micro_batch=micro_batch)
    if dataset.num_tokens < plan.tokens_needed:
        raise LlmbError(
            f"{prefix}: {dataset.num_tokens:,} tokens, and {batches} windows of {plan.seq_len} + 1 need "
            f"{plan.tokens_needed:,} (fewer --batches or a shorter --seq-len)"
        )
    return plan

