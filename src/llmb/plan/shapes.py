"""Model shapes: what the memory model (:mod:`llmb.plan.memory`) and the step-time model
(:mod:`llmb.plan.predict`) both need to know about a model, computed in one place.

* parameter counts: per layer (:func:`layer_params`), per pipeline rank on one GPU
  (:func:`rank_params`) and for the whole model (:func:`param_count`, the figure ``llmb flops``
  and ``llmb show`` print), all from the same per-layer count;
* the layer kinds (dense, MoE) and how many of each a pipeline rank holds;
* the width in bytes of an activation element and of a saved GEMM input, per run dtype;
* the recompute levels (what each saves is the memory model's business, what each costs the
  step model's);
* :func:`per_model_cache`, the memo both models' hot paths use.

Units: parameters are counted in elements (per GPU where a function says so: after tensor and
expert sharding, before data-parallel or FSDP sharding); widths in bytes per element.
Linear layers carry no biases; a norm carries a weight, plus a bias for LayerNorm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import wraps
from typing import Any, Literal, TypeVar

from llmb.catalog.schema import ModelSpec
from llmb.errors import LlmbError
from llmb.plan.layout import DerivedLayout

_F = TypeVar("_F", bound=Callable[..., Any])
_MISSING = object()


def per_model_cache(fn: _F) -> _F:
    """Memoize ``fn(model, *hashable_args)`` on the model's identity.

    Like ``functools.lru_cache``, but a pydantic model re-hashes every field each time it is
    hashed, which dominated layout search (tens of thousands of cache look-ups). Each entry
    keeps its model alive, so an id cannot be reused while it is a key; a full cache is
    simply emptied."""
    cache: dict[tuple[Any, ...], tuple[Any, Any]] = {}

    @wraps(fn)
    def wrapper(model: Any, *args: Any) -> Any:
        key = (id(model), *args)
        hit = cache.get(key, _MISSING)
        if hit is _MISSING:
            if len(cache) >= 65536:
                cache.clear()
            hit = cache[key] = (model, fn(model, *args))
        return hit[1]

    wrapper.cache_clear = cache.clear  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Recompute levels
# ---------------------------------------------------------------------------------------------

Recompute = Literal["none", "selective", "mlp", "save_qkv", "full"]
# Ordered from the least to the most recomputation (and the most to the least memory).
RECOMPUTE_LEVELS: tuple[str, ...] = ("none", "selective", "mlp", "save_qkv", "full")


def check_recompute(recompute: str) -> None:
    """Refuse a recompute level neither model knows."""
    if recompute not in RECOMPUTE_LEVELS:
        raise LlmbError(
            f"unknown recompute {recompute!r} (choose from {', '.join(RECOMPUTE_LEVELS)})"
        )


# ---------------------------------------------------------------------------------------------
# Byte widths
# ---------------------------------------------------------------------------------------------


def act_bytes(dtype: str) -> int:
    """Bytes of one activation element in a run of ``dtype``: 4 in fp32 runs, else 2 (fp8 runs
    keep bf16 activations between GEMMs, and bf16 weights and gradients outside them)."""
    return 4 if dtype == "fp32" else 2


def gemm_input_bytes(dtype: str) -> int:
    """Bytes of one saved GEMM input: Transformer Engine saves the FP8-cast copy in FP8 runs."""
    return 1 if dtype == "fp8" else act_bytes(dtype)


# ---------------------------------------------------------------------------------------------
# Parameters per layer
# ---------------------------------------------------------------------------------------------


def norm_params(model: ModelSpec) -> int:
    """Elements of one norm: a weight, plus a bias for LayerNorm."""
    return 2 * model.hidden if model.norm == "layernorm" else model.hidden


@dataclass(frozen=True)
class LayerParams:
    """Elements of one transformer layer's parameters (whole layer, before any sharding)."""

    attention: int  # Q, K, V and output projections
    norms: int
    dense_mlp: int  # a dense MLP, or the shared experts and router of an MoE layer
    experts: int  # routed experts (all of them)
    active_experts: int  # the routed experts one token passes through (top_k of them)

    @property
    def total(self) -> int:
        return self.attention + self.norms + self.dense_mlp + self.experts


@per_model_cache
def layer_params(model: ModelSpec, index: int) -> LayerParams:
    """Parameters of layer ``index``."""
    h, d = model.hidden, model.kv_channels
    q, kv = model.heads * d, model.query_groups * d
    mats = 3 if model.gated else 2
    attention = 2 * h * q + 2 * h * kv
    moe = model.moe
    if moe is not None and model.is_moe_layer(index):
        dense = h * moe.num_experts + moe.shared_experts * mats * h * moe.shared_expert_ffn_hidden
        expert = mats * h * moe.expert_ffn_hidden
        experts, active = moe.num_experts * expert, moe.top_k * expert
    else:
        dense, experts, active = mats * h * model.ffn_hidden, 0, 0
    return LayerParams(
        attention=attention, norms=(4 if model.sandwich_norm else 2) * norm_params(model), dense_mlp=dense, experts=experts, active_experts=active
    )


@per_model_cache
def first_of_kind(model: ModelSpec) -> dict[bool, int]:
    """Index of the first dense (False) and MoE (True) layer; layers of a kind are alike, so
    per-kind work is done on these."""
    out: dict[bool, int] = {}
    for i in range(model.layers):
        out.setdefault(model.is_moe_layer(i), i)
    return out


@per_model_cache
def kind_counts(model: ModelSpec, layers_per_chunk: tuple[int, ...], pp: int) -> list[dict[bool, int]]:
    """Per pipeline rank: how many of its layers are dense (False) and MoE (True). Chunk ``c``
    runs on rank ``c % pp``. (Cached: callers must not modify the result.)"""
    counts: list[dict[bool, int]] = [{} for _ in range(pp)]
    start = 0
    for c, n in enumerate(layers_per_chunk):
        for i in range(start, start + n):
            kind = model.is_moe_layer(i)
            counts[c % pp][kind] = counts[c % pp].get(kind, 0) + 1
        start += n
    return counts


# ---------------------------------------------------------------------------------------------
# Parameters per pipeline rank, on one GPU
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankParams:
    """Elements held by one GPU of one pipeline rank: after TP and EP x ETP sharding, before
    data-parallel (distributed optimizer) or FSDP sharding."""

    layers: float  # the rank's layers but their routed experts: attention and dense MLP
    # (or shared experts and router) split by TP, norms replicated
    embeddings: float  # input embedding (first rank) and output layer (last rank, when untied
    # or when a pipeline needs its own copy of the tied one), split by TP
    final_norm: float  # the last rank's, replicated; 0 on the others
    experts: float  # routed experts, split over EP x ETP
    gemm: float  # the GEMM weights among all of the above: attention, dense MLP and router,
    # experts, output layer (not the norms, not the input embedding's lookup table)

    @property
    def dense(self) -> float:
        """Non-expert elements (the distributed optimizer shards them over DP x CP)."""
        return self.layers + self.embeddings + self.final_norm

    @property
    def total(self) -> float:
        return self.dense + self.experts


def rank_params(model: ModelSpec, derived: DerivedLayout, rank: int) -> RankParams:
    """Parameters held by one GPU of pipeline rank ``rank`` under ``derived``."""
    lay = derived.layout
    return _rank_params(model, derived.layers_per_chunk, lay.pp, lay.tp, lay.ep, derived.etp, rank)


@per_model_cache
def _rank_params(
    model: ModelSpec, layers_per_chunk: tuple[int, ...], pp: int, tp: int, ep: int, etp: int, rank: int
) -> RankParams:
    first = first_of_kind(model)
    layers = experts = gemm = 0.0
    for kind, n in kind_counts(model, layers_per_chunk, pp)[rank].items():
        lp = layer_params(model, first[kind])
        layers += n * ((lp.attention + lp.dense_mlp) / tp + lp.norms)
        experts += n * lp.experts / (ep * etp)
        gemm += n * ((lp.attention + lp.dense_mlp) / tp + lp.experts / (ep * etp))
    emb = model.vocab * model.hidden / tp
    embeddings = final_norm = 0.0
    if rank == 0:
        embeddings += emb
    if rank == pp - 1:
        final_norm = float(norm_params(model))
        if not model.tied_embeddings or pp > 1:
            embeddings += emb
            gemm += emb
    return RankParams(layers=layers, embeddings=embeddings, final_norm=final_norm, experts=experts, gemm=gemm)


# ---------------------------------------------------------------------------------------------
# The whole model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts (elements). ``active`` counts what one token passes through."""

    embedding: int
    output: int  # 0 when tied to the embedding
    attention: int
    mlp_total: int
    mlp_active: int
    norms: int

    @property
    def total(self) -> int:
        return self.embedding + self.output + self.attention + self.mlp_total + self.norms

    @property
    def active(self) -> int:
        return self.embedding + self.output + self.attention + self.mlp_active + self.norms

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total, "active": self.active}


def param_count(model: ModelSpec) -> ParamCount:
    """Parameters of ``model``: its layers' (:func:`layer_params`), the final norm, the input
    embedding and the output layer."""
    attention = mlp_total = mlp_active = norms = 0
    for i in range(model.layers):
        lp = layer_params(model, i)
        attention += lp.attention
        mlp_total += lp.dense_mlp + lp.experts
        mlp_active += lp.dense_mlp + lp.active_experts
        norms += lp.norms
    embedding = model.vocab * model.hidden
    return ParamCount(
        embedding=embedding,
        output=0 if model.tied_embeddings else embedding,
        attention=attention,
        mlp_total=mlp_total,
        mlp_active=mlp_active,
        norms=norms + norm_params(model),
    )
