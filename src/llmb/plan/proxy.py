"""Proxy sizes: shrink a catalog workload to CPU scale while keeping its family and the kinds
of parallelism its recipe uses. The shrinks are data (``proxies.yaml``), validated here.

Pure Python (no torch): planning a proxy is instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmb.catalog.schema import ModelSpec
from llmb.datafile import load_model
from llmb.errors import LlmbError
from llmb.plan.layout import Layout

PROXIES_FILE = Path(__file__).resolve().parent / "proxies.yaml"
Kind = Literal["pp", "tp", "cp", "ep", "dp"]


class ProxySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    query_groups: int = Field(gt=0)
    vocab: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    num_experts: int = Field(gt=0)
    ffn_multiple: int = Field(default=64, gt=0)
    mbs: int = Field(default=1, gt=0)
    max_ga: int = Field(default=4, gt=0)


class ProxyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str
    parallel_priority: tuple[Kind, ...]
    proxies: dict[str, ProxySpec]


@lru_cache(maxsize=1)
def load_proxies(path: Path = PROXIES_FILE) -> ProxyFile:
    pf = load_model(path, ProxyFile, strict=False)
    if pf.default not in pf.proxies:
        raise LlmbError(f"{path.name}: default proxy {pf.default!r} is not defined")
    return pf


def proxy_spec(name: str) -> ProxySpec:
    pf = load_proxies()
    if name not in pf.proxies:
        raise LlmbError(f"unknown proxy {name!r} (known: {', '.join(pf.proxies)})")
    return pf.proxies[name]


def _scaled(width: int, ref_hidden: int, hidden: int, multiple: int) -> int:
    return max(multiple, round(width / ref_hidden * hidden / multiple) * multiple)


def shrink_model(model: ModelSpec, proxy: ProxySpec) -> ModelSpec:
    """The proxy's model: same family, ratios and architecture variants (RoPE scaling, partial
    RoPE, NoPE layers, norm gamma, MoE gating side), CPU-sized."""
    update: dict[str, object] = {
        "layers": proxy.layers,
        "hidden": proxy.hidden,
        "heads": proxy.heads,
        "query_groups": min(proxy.query_groups, proxy.heads),
        "head_dim": None,
        "vocab": proxy.vocab,
        "seq_len": proxy.seq_len,
        "ffn_hidden": _scaled(model.ffn_hidden, model.hidden, proxy.hidden, proxy.ffn_multiple),
        "assumptions": f"CPU proxy of a {model.layers}-layer, hidden-{model.hidden} model",
    }
    if model.moe is not None:
        m = model.moe
        experts = max(proxy.num_experts, m.top_k)
        update["moe"] = m.model_copy(
            update={
                "num_experts": experts,
                "expert_ffn_hidden": _scaled(m.expert_ffn_hidden, model.hidden, proxy.hidden, proxy.ffn_multiple),
                "shared_expert_ffn_hidden": (
                    _scaled(m.shared_expert_ffn_hidden, model.hidden, proxy.hidden, proxy.ffn_multiple)
                    if m.shared_experts else 0
                ),
            }
        )
    shrunk = model.model_copy(update=update)
    try:  # model_copy does not validate: a shrink must still be a valid model
        return ModelSpec.model_validate(shrunk.model_dump())
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise LlmbError(f"the proxy cannot shrink this model: {reason}") from None


@dataclass(frozen=True)
class ProxyLayout:
    layout: Layout
    kept: tuple[str, ...]
    dropped: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())
    used: tuple[str, ...] = ()  # the kinds of parallelism the recipe uses


def proxy_layout(recipe: Layout, recipe_dp: int, model: ModelSpec, proxy: ProxySpec, world: int) -> ProxyLayout:
    """A layout of the same kinds of parallelism as ``recipe`` for ``world`` CPU ranks.

    Each kind the recipe uses gets size 2, in ``parallel_priority`` order while the world
    allows; EP is carved out of the DP ranks, so it needs DP >= 2; the rest of the world
    becomes DP. VP becomes 2 when the recipe interleaves and PP is kept; ETP follows TP when
    the recipe splits its experts over tensor-parallel ranks (ETP > 1).
    """
    if world < 1:
        raise LlmbError(f"world size must be positive, got {world}")
    used = {
        "tp": recipe.tp > 1, "pp": recipe.pp > 1, "cp": recipe.cp > 1,
        "ep": recipe.ep > 1 and model.moe is not None, "dp": recipe_dp > 1,
        "etp": model.moe is not None and (recipe.etp if recipe.etp is not None else recipe.tp) > 1,
    }
    sizes = {"tp": 1, "pp": 1, "cp": 1, "ep": 1}
    kept: list[str] = []
    left = world
    for kind in load_proxies().parallel_priority:
        if not used[kind]:
            continue
        if kind == "dp":
            continue  # DP takes what is left, below
        if kind == "ep":
            if left % 2 == 0 and left >= 2:
                sizes["ep"] = 2  # carved from the DP ranks that remain
                kept.append("ep")
            continue
        if left % 2 == 0 and left >= 2 and not (kind == "tp" and model.heads % 2):
            sizes[kind] = 2
            left //= 2
            kept.append(kind)
    dp = left
    etp = sizes["tp"] if used["etp"] else 1
    if etp > 1:
        kept.append("etp")
    if dp > 1:
        kept.append("dp")
    dropped = tuple(k for k, u in used.items() if u and k not in kept)
    notes: list[str] = []
    if dp > 1 and not used["dp"]:
        notes.append(f"the recipe has no data parallelism; the {dp} spare ranks run DP")
    pp = sizes["pp"]
    vp = 2 if (recipe.vp or 1) > 1 and pp > 1 else None
    chunks = pp * (vp or 1)
    if proxy.layers % chunks:
        raise LlmbError(f"proxy layers ({proxy.layers}) must be divisible by PP*VP = {chunks}")
    ga = proxy.max_ga
    if pp > 1 and ga % pp:
        ga = pp * max(1, ga // pp)
    layout = Layout(
        gpus=world, tp=sizes["tp"], pp=pp, cp=sizes["cp"], ep=sizes["ep"],
        etp=etp if model.moe is not None else None, vp=vp,
        mbs=proxy.mbs, gbs=proxy.mbs * dp * ga,
    )
    return ProxyLayout(layout=layout, kept=tuple(kept), dropped=dropped, notes=tuple(notes),
                       used=tuple(k for k, u in used.items() if u))
