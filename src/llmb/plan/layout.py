"""Parallel-layout algebra: derive DP, GA, expert and pipeline sizes, and check every constraint
a Megatron-style framework would reject, each as a one-line error naming the numbers.

Conventions (Megatron-Core):

* The world is ``GPUs = TP x CP x PP x DP`` (attention side) and, for MoE layers,
  ``TP x CP x DP = ETP x EP x EDP`` within each pipeline stage (expert side).
* ``GA = GBS / (MBS x DP)`` micro-batches run per step on every data-parallel rank.
* With virtual pipelining each of the ``PP`` ranks holds ``VP`` model chunks, so the layers are
  split into ``PP x VP`` chunks. Megatron can count the input embedding and the loss as one
  layer each in that split (``account_for_embedding/loss_in_pipeline_split``).
* ``fsdp`` (MaxText style) is the size of the parameter-sharding group inside DP.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from llmb.catalog.schema import ModelSpec
from llmb.errors import LayoutError

#: The layout knobs a request may override (``--tp`` ... on the command line, ``TP`` ... in the
#: environment where the recipes define a variable for them).
LAYOUT_KNOBS: tuple[str, ...] = ("tp", "pp", "cp", "ep", "etp", "vp", "mbs", "gbs", "fsdp", "layers")
#: How the layers are split into pipeline chunks: ``account`` counts the input embedding and
#: the loss as one layer each (Megatron's account_for_embedding/loss_in_pipeline_split, the
#: NeMo 2 405B rows: 126 + 2 = 128 slots), ``plain`` splits the transformer layers only (NeMo 1's
#: 405B rows: 126 = 9 x 7 x 2); ``auto`` keeps the recipe's choice unless only the other divides.
PP_SPLITS: tuple[str, ...] = ("auto", "account", "plain")


@dataclass(frozen=True)
class Layout:
    """A parallel layout request. ``etp=None`` means "same as TP"; ``vp=None`` means 1."""

    gpus: int
    tp: int = 1
    pp: int = 1
    cp: int = 1
    ep: int = 1
    etp: int | None = None
    vp: int | None = None
    mbs: int = 1
    gbs: int = 1
    fsdp: int | None = None
    embedding_in_pipeline_split: bool = False
    loss_in_pipeline_split: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ParallelDims:
    """The process-mesh sizes a layout needs on one model replica's ranks and its replicas:
    ``world = PP x DP x CP x TP``, experts folded over each stage's DP x CP x TP ranks as
    ``EDP x EP x ETP``. Dense models have ``ep = etp = 1`` (no expert layout at all)."""

    pp: int = 1
    dp: int = 1
    cp: int = 1
    tp: int = 1
    ep: int = 1
    etp: int = 1

    @property
    def world(self) -> int:
        return self.pp * self.dp * self.cp * self.tp

    @property
    def dp_cp(self) -> int:
        return self.dp * self.cp

    @property
    def experts_split(self) -> bool:
        return self.ep * self.etp > 1

    @property
    def edp(self) -> int:
        return self.dp_cp * self.tp // (self.ep * self.etp)


@dataclass(frozen=True)
class DerivedLayout:
    """What follows from a valid :class:`Layout` for a given model."""

    layout: Layout
    dp: int
    ga: int
    etp: int
    edp: int
    vp: int
    model_parallel: int  # TP x CP x PP: GPUs holding one model replica
    pipeline_chunks: int  # PP x VP
    layers_per_chunk: tuple[int, ...]  # transformer layers in each (virtual) chunk, in order
    warnings: tuple[str, ...] = field(default=())
    moe: bool = False  # the model has routed experts (EP and ETP apply)

    @property
    def parallel_dims(self) -> ParallelDims:
        """The mesh sizes of this layout (the one source the engine builds its mesh from)."""
        lay = self.layout
        return ParallelDims(
            pp=lay.pp, dp=self.dp, cp=lay.cp, tp=lay.tp,
            ep=lay.ep if self.moe else 1, etp=self.etp if self.moe else 1,
        )

    @property
    def layers_per_stage(self) -> tuple[int, ...]:
        """Transformer layers held by each of the PP ranks (all its virtual chunks)."""
        pp = self.layout.pp
        return tuple(sum(self.layers_per_chunk[s::pp]) for s in range(pp))

    def as_dict(self) -> dict[str, object]:
        d = {k: v for k, v in asdict(self).items() if k not in ("layout", "moe")}
        d["layers_per_stage"] = list(self.layers_per_stage)
        d["layers_per_chunk"] = list(self.layers_per_chunk)
        d["warnings"] = list(self.warnings)
        return d


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LayoutError(f"{name} must be a whole number, got {value!r}")
    if value <= 0:
        raise LayoutError(f"{name} must be positive, got {value}")
    return value


def choose_pipeline_split(layout: Layout, layers: int, choice: str = "auto") -> tuple[Layout, str | None]:
    """``layout`` with the pipeline split ``choice`` asks for (see :data:`PP_SPLITS`), and a note
    when ``auto`` had to switch from the recipe's split because only the other one divides."""
    if choice not in PP_SPLITS:
        raise LayoutError(f"unknown pipeline split {choice!r} (choose from {', '.join(PP_SPLITS)})")
    chunks = layout.pp * (layout.vp or 1)
    current = layout.embedding_in_pipeline_split or layout.loss_in_pipeline_split
    if layout.pp == 1 or (choice == "auto" and not current and layers % chunks == 0):
        want, note = current, None
    elif choice != "auto":
        want, note = choice == "account", None
    else:
        plain_ok, account_ok = layers % chunks == 0, (layers + 2) % chunks == 0
        want, note = current, None
        if current and not account_ok and plain_ok:
            want, note = False, f"pipeline split: {layers} layers over PP*VP = {chunks} chunks, embedding and loss not counted"
        elif not current and not plain_ok and account_ok:
            want, note = True, f"pipeline split: {layers}+2 slots over PP*VP = {chunks} chunks (embedding and loss counted)"
    return replace(layout, embedding_in_pipeline_split=want, loss_in_pipeline_split=want), note


def derive(layout: Layout, model: ModelSpec) -> DerivedLayout:
    """Validate ``layout`` for ``model`` and derive the implied sizes.

    Raises :class:`LayoutError` with one line naming the first violated constraint.
    """
    gpus = _positive("GPUs", layout.gpus)
    tp = _positive("TP", layout.tp)
    pp = _positive("PP", layout.pp)
    cp = _positive("CP", layout.cp)
    ep = _positive("EP", layout.ep)
    etp = _positive("ETP", layout.etp if layout.etp is not None else tp)
    vp = _positive("VP", layout.vp if layout.vp is not None else 1)
    mbs = _positive("MBS", layout.mbs)
    gbs = _positive("GBS", layout.gbs)
    warnings: list[str] = []

    model_parallel = tp * cp * pp
    if gpus % model_parallel:
        raise LayoutError(
            f"GPUs ({gpus}) must be divisible by TP*CP*PP = {tp}*{cp}*{pp} = {model_parallel}"
        )
    dp = gpus // model_parallel
    if gbs % (mbs * dp):
        raise LayoutError(
            f"GBS ({gbs}) must be divisible by MBS*DP = {mbs}*{dp} = {mbs * dp}"
        )
    ga = gbs // (mbs * dp)

    if layout.fsdp is not None:
        fsdp = _positive("FSDP", layout.fsdp)
        if dp % fsdp:
            raise LayoutError(f"DP ({dp}) must be divisible by the FSDP group size ({fsdp})")

    # Tensor parallelism splits heads and KV groups.
    if model.heads % tp:
        raise LayoutError(f"attention heads ({model.heads}) must be divisible by TP ({tp})")
    if model.query_groups % tp and tp % model.query_groups:
        raise LayoutError(
            f"query groups ({model.query_groups}) must be divisible by TP ({tp}) "
            "(or TP by the query groups, replicating KV heads)"
        )
    if tp > 1 and model.ffn_hidden % tp:
        raise LayoutError(f"FFN hidden ({model.ffn_hidden}) must be divisible by TP ({tp})")
    seq = model.seq_len
    if cp > 1 and seq % (2 * cp):
        raise LayoutError(
            f"sequence length ({seq}) must be divisible by 2*CP = {2 * cp} "
            "(load-balanced causal context parallelism)"
        )
    if tp > 1 and (seq // cp) % tp:
        raise LayoutError(
            f"sequence per CP rank ({seq // cp}) must be divisible by TP ({tp}) "
            "for sequence parallelism"
        )

    # Pipeline split.
    if vp > 1 and pp == 1:
        warnings.append(f"VP={vp} has no effect with PP=1; treated as VP=1")
        vp = 1
    chunks = pp * vp
    extra_first = 1 if layout.embedding_in_pipeline_split and pp > 1 else 0
    extra_last = 1 if layout.loss_in_pipeline_split and pp > 1 else 0
    slots = model.layers + extra_first + extra_last
    if slots % chunks:
        if extra_first or extra_last:
            counted = f"{model.layers}+{extra_first + extra_last} = {slots}"
            hint = ""
        else:
            counted = str(model.layers)
            hint = (
                " (Megatron can count the embedding and the loss as layers: "
                "set embedding/loss_in_pipeline_split)"
            )
        raise LayoutError(
            f"layers ({counted}) must be divisible by PP*VP = {pp}*{vp} = {chunks}{hint}"
        )
    per_chunk = slots // chunks
    layers_per_chunk = [per_chunk] * chunks
    if extra_first:
        # Chunks are ordered model-wise: chunk c runs on stage c % PP.
        layers_per_chunk[0] -= 1
    if extra_last:
        layers_per_chunk[-1] -= 1
    if vp > 1 and ga % pp:
        raise LayoutError(
            f"GA ({ga}) must be divisible by PP ({pp}) for the interleaved pipeline schedule"
        )

    # Experts.
    moe = model.moe
    if moe is None:
        if ep > 1:
            raise LayoutError(f"EP ({ep}) needs a mixture-of-experts model; this one is dense")
        if layout.etp is not None and layout.etp != tp:
            raise LayoutError(f"ETP ({etp}) needs a mixture-of-experts model; this one is dense")
        edp = dp
    else:
        if moe.num_experts % ep:
            raise LayoutError(f"experts ({moe.num_experts}) must be divisible by EP ({ep})")
        if moe.expert_ffn_hidden % etp:
            raise LayoutError(
                f"expert FFN hidden ({moe.expert_ffn_hidden}) must be divisible by ETP ({etp})"
            )
        stage_world = tp * cp * dp
        if stage_world % (etp * ep):
            raise LayoutError(
                f"TP*CP*DP = {tp}*{cp}*{dp} = {stage_world} must be divisible by "
                f"ETP*EP = {etp}*{ep} = {etp * ep} (expert layout within a pipeline stage)"
            )
        edp = stage_world // (etp * ep)

    return DerivedLayout(
        layout=layout,
        dp=dp,
        ga=ga,
        etp=etp,
        edp=edp,
        vp=vp,
        model_parallel=model_parallel,
        pipeline_chunks=chunks,
        layers_per_chunk=tuple(layers_per_chunk),
        warnings=tuple(warnings),
        moe=moe is not None,
    )
