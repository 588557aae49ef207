"""llmb parameter names <-> Hugging Face transformers tensor names, in both directions.

One table for every family (transformers 5.23: ``LlamaForCausalLM``, ``Llama4ForCausalLM``,
``NemotronForCausalLM``). Most tensors are the same matrix under another name (``nn.Linear``
stores ``[out, in]`` in both). Two are not:

- **Llama 4's query and key rows.** transformers' Llama 4 rotates channel pairs ``(2j,
  2j + 1)`` of each head (complex multiplication); llmb rotates ``(j, j + d/2)`` (rotate-half,
  as transformers' Llama and Nemotron do). Row ``j`` of a head here is row ``2j`` there for
  ``j < d/2`` and row ``2(j - d/2) + 1`` above: a permutation within each head, applied to the
  query and key projections of every layer (the attention scores are unchanged by it, NoPE
  layers included).
- **Llama 4's stacked experts.** transformers holds ``gate_up_proj [experts, hidden, 2F]``
  (gate columns first, then up) and ``down_proj [experts, F, hidden]``; llmb holds ``w1``
  (gate) and ``w3`` (up) ``[experts, hidden, F]`` and ``w2 [experts, F, hidden]``: ``w1`` and
  ``w3`` are the two halves of the last dimension.

Reading (:func:`load_hf_weights`) goes box by box: each rank reads from the safetensors files
only the slice of each tensor its shards hold (FSDP rows, TP slices, its experts, its pipeline
stage's layers), through safetensors' lazy slices. Writing (:func:`export_hf`) is one process
and goes a group of layers at a time, so memory holds one safetensors shard, not the model.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from llmb.catalog.hf_config import CONFIG_FILE, hf_config_from_spec
from llmb.catalog.schema import ModelSpec
from llmb.engine.models.init import local_box
from llmb.errors import LlmbError

SAFETENSORS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# Per family: the llmb name of a layer's part -> transformers' (the ``model.layers.{i}.``
# prefix is the same on both sides, apart from ``model.``).
_LAYER = {
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
}
_MLP = {
    "llama": {"w1": "mlp.gate_proj", "w3": "mlp.up_proj", "w2": "mlp.down_proj"},
    "nemotron": {"w1": "mlp.up_proj", "w2": "mlp.down_proj"},
    "llama4": {"w1": "feed_forward.gate_proj", "w3": "feed_forward.up_proj", "w2": "feed_forward.down_proj"},
}
_LLAMA4_MOE = {
    "router": "feed_forward.router",
    "shared.w1": "feed_forward.shared_expert.gate_proj",
    "shared.w3": "feed_forward.shared_expert.up_proj",
    "shared.w2": "feed_forward.shared_expert.down_proj",
}
_TOP = {"tok_embeddings.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
        "norm.weight": "model.norm.weight", "norm.bias": "model.norm.bias"}
_LAYER_FQN = re.compile(r"^layers\.(\d+)\.(.+)\.(weight|bias|w1|w2|w3)$")


@dataclass(frozen=True)
class HfSource:
    """Where an llmb tensor lives in a transformers checkpoint: tensor ``name``; with ``half``
    (0 or 1) the first or second half of its last dimension (Llama 4's ``gate_up_proj``);
    with ``head_dim`` its rows are interleaved-RoPE ordered within heads of that width."""

    name: str
    half: int | None = None
    head_dim: int | None = None


def hf_source(fqn: str, spec: ModelSpec) -> HfSource:
    """The transformers tensor holding llmb parameter ``fqn`` (its name in one unparallelized
    :class:`~llmb.engine.models.transformer.Transformer`)."""
    if spec.family not in _MLP:
        # Grok-1 has no transformers class (its checkpoint is xAI's JAX format)
        raise LlmbError(f"no transformers mapping for the {spec.family} family (llmb parameter {fqn})")
    if fqn in _TOP:
        return HfSource(_TOP[fqn])
    m = _LAYER_FQN.match(fqn)
    if m is None:
        raise LlmbError(f"no transformers name for llmb parameter {fqn}")
    layer, part, leaf = m.groups()
    prefix = f"model.layers.{layer}."
    if part in _LAYER:
        permute = spec.family == "llama4" and part in ("attention.wq", "attention.wk")
        return HfSource(prefix + _LAYER[part] + "." + leaf, head_dim=spec.kv_channels if permute else None)
    if part == "feed_forward.experts" and spec.family == "llama4":
        if leaf == "w2":
            return HfSource(prefix + "feed_forward.experts.down_proj")
        return HfSource(prefix + "feed_forward.experts.gate_up_proj", half=0 if leaf == "w1" else 1)
    sub = part.removeprefix("feed_forward.")
    table = _LLAMA4_MOE if spec.family == "llama4" and spec.is_moe_layer(int(layer)) else _MLP[spec.family]
    if part.startswith("feed_forward.") and sub in table:
        return HfSource(prefix + table[sub] + "." + leaf)
    raise LlmbError(f"no transformers name for llmb parameter {fqn}")


def _rope_order(head_dim: int) -> torch.Tensor:
    """``order[j]``: the interleaved row of rotate-half row ``j`` within one head."""
    half = head_dim // 2
    j = torch.arange(head_dim)
    return torch.where(j < half, 2 * j, 2 * (j - half) + 1)


# -- reading --------------------------------------------------------------------------------


class HfCheckpoint:
    """The safetensors files of a transformers checkpoint folder (one file, or shards with an
    index), opened lazily: reading a slice reads those bytes only."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        index = self.directory / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise LlmbError(f"{index}: not a safetensors index ({exc})") from None
            self.files = {name: self.directory / f for name, f in weight_map.items()}
        elif (self.directory / SAFETENSORS_FILE).is_file():
            self.files = None
        else:
            raise LlmbError(f"hf:{self.directory}: no {SAFETENSORS_FILE} or {INDEX_FILE}")
        self._open: dict[Path, object] = {}

    def _handle(self, path: Path):
        from safetensors import safe_open

        if path not in self._open:
            try:
                self._open[path] = safe_open(str(path), framework="pt", device="cpu")
            except Exception as exc:  # safetensors raises its own error types
                raise LlmbError(f"{path}: cannot open it as safetensors ({exc})") from None
        return self._open[path]

    def tensor_slice(self, name: str):
        """safetensors' lazy slice of tensor ``name`` (``.get_shape()``, ``[...]``)."""
        if self.files is None:
            handle = self._handle(self.directory / SAFETENSORS_FILE)
            if name not in handle.keys():
                raise LlmbError(f"hf:{self.directory} has no tensor {name}")
        else:
            if name not in self.files:
                raise LlmbError(f"hf:{self.directory} has no tensor {name}")
            handle = self._handle(self.files[name])
        return handle.get_slice(name)


def read_box(ckpt: HfCheckpoint, src: HfSource, shape: tuple[int, ...], offset: tuple[int, ...],
             size: tuple[int, ...], fqn: str) -> torch.Tensor:
    """The box ``offset .. offset + size`` of the llmb tensor ``fqn`` (global ``shape``), read
    from ``ckpt``."""
    sl = ckpt.tensor_slice(src.name)
    hf_shape = tuple(sl.get_shape())
    want = list(shape)
    if src.half is not None:
        want[-1] *= 2
    if hf_shape != tuple(want):
        raise LlmbError(f"hf:{ckpt.directory}: {src.name} has shape {list(hf_shape)}, llmb's {fqn} needs {want}")
    index = [slice(o, o + n) for o, n in zip(offset, size)]
    if src.half is not None:
        start = src.half * shape[-1] + offset[-1]
        index[-1] = slice(start, start + size[-1])
    if src.head_dim is None:
        return sl[tuple(index)] if index else sl[:]
    d = src.head_dim
    first, last = offset[0] // d, -(-(offset[0] + size[0]) // d)
    index[0] = slice(first * d, last * d)
    block = sl[tuple(index)]
    block = block.view(last - first, d, *block.shape[1:])[:, _rope_order(d)].reshape(block.shape)
    start = offset[0] - first * d
    return block[start : start + size[0]]


@torch.no_grad()
def load_hf_weights(tensors: dict[str, torch.Tensor], spec: ModelSpec, directory: Path) -> int:
    """Fill the ``model.<fqn>`` entries of a trainer's state tensors (plain tensors, FSDP/TP
    DTensors, or expert-parallel DTensor views) from the transformers checkpoint in
    ``directory``, each from the slice it holds. Returns the number of elements read."""
    ckpt = HfCheckpoint(directory)
    read = 0
    for key, tensor in tensors.items():
        if not key.startswith("model."):
            continue
        fqn = key.removeprefix("model.")
        local, shape, offset = local_box(tensor)
        if local.numel() == 0:
            continue
        value = read_box(ckpt, hf_source(fqn, spec), shape, offset, tuple(local.shape), fqn)
        local.copy_(value.to(local.dtype))
        read += value.numel()
    return read


# -- writing --------------------------------------------------------------------------------


def to_hf(spec: ModelSpec, fqn: str, value: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
    """Put the whole llmb tensor ``fqn`` into ``out`` under its transformers name (the halves
    of Llama 4's ``gate_up_proj`` are joined once both are in)."""
    src = hf_source(fqn, spec)
    if src.head_dim is not None:
        d = src.head_dim
        hf = torch.empty_like(value)
        hf.view(-1, d, *value.shape[1:])[:, _rope_order(d)] = value.view(-1, d, *value.shape[1:])
        value = hf
    if src.half is None:
        out[src.name] = value.contiguous()
        return
    halves = out.setdefault(src.name + "#halves", [None, None])  # type: ignore[arg-type]
    halves[src.half] = value
    if halves[0] is not None and halves[1] is not None:
        out[src.name] = torch.cat(halves, dim=-1).contiguous()
        del out[src.name + "#halves"]


def export_hf(spec: ModelSpec, read_tensors, names: list[str], out_dir: Path, dtype: torch.dtype = torch.float32,
              shard_bytes: int = 5 * 2**30) -> list[Path]:
    """Write the model as a transformers checkpoint folder: ``config.json`` and safetensors
    (``model.safetensors``, or shards of at most about ``shard_bytes`` with an index).

    ``names`` are the llmb parameter fqns; ``read_tensors(fqns)`` returns ``{fqn: whole
    tensor}`` for a list of them (e.g. from a DCP checkpoint), called one group of layers at a
    time. Returns the files written."""
    from safetensors.torch import save_file

    config = hf_config_from_spec(spec, dtype=str(dtype).removeprefix("torch."))
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = _groups(names)
    itemsize = torch.empty((), dtype=dtype).element_size()
    pending: dict[str, torch.Tensor] = {}
    shards: list[dict[str, torch.Tensor]] = []
    size = 0
    for group in groups:
        hf: dict[str, torch.Tensor] = {}
        for fqn, value in read_tensors(group).items():
            to_hf(spec, fqn, value.to(dtype), hf)
        leftover = [k for k in hf if k.endswith("#halves")]
        if leftover:
            raise RuntimeError(f"half of {leftover[0]} is missing")
        for name, value in hf.items():
            if pending and size + value.numel() * itemsize > shard_bytes:
                shards.append(pending)
                pending, size = {}, 0
            pending[name] = value
            size += value.numel() * itemsize
    if pending:
        shards.append(pending)
    files: list[Path] = []
    meta = {"format": "pt", "written_by": "llmb"}
    if len(shards) == 1:
        files.append(out_dir / SAFETENSORS_FILE)
        save_file(shards[0], str(files[0]), metadata=meta)
    else:
        weight_map, total = {}, 0
        for i, shard in enumerate(shards, 1):
            path = out_dir / f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(path), metadata=meta)
            files.append(path)
            for name, value in shard.items():
                weight_map[name] = path.name
                total += value.numel() * itemsize
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        files.append(out_dir / INDEX_FILE)
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    files.append(out_dir / CONFIG_FILE)
    mode = 0o666 & ~_umask()  # safetensors writes its files 0600; a model folder is for sharing
    for f in files:
        os.chmod(f, mode)
    return files


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _groups(names: list[str]) -> list[list[str]]:
    """The fqns in model order, one group per layer, the embedding first and the head last."""
    layers: dict[int, list[str]] = {}
    first, last = [], []
    for n in names:
        m = re.match(r"^layers\.(\d+)\.", n)
        if m:
            layers.setdefault(int(m.group(1)), []).append(n)
        elif n.startswith("tok_embeddings"):
            first.append(n)
        else:
            last.append(n)
    return [g for g in ([first] + [layers[i] for i in sorted(layers)] + [last]) if g]
