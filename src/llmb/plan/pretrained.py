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
