"""Pipeline parallelism with ``torch.distributed.pipelining``.

The model is cut into ``PP x VP`` chunks of consecutive layers (sizes from
:func:`llmb.plan.layout.derive`); chunk ``c`` runs on pipeline rank ``c % PP``, so with VP > 1
every rank holds VP non-adjacent chunks (Megatron's interleaving). A chunk is the whole model
built on ``meta`` with the other layers deleted (torchtitan's way): parameter names are the
same as in one process. The first chunk keeps the embedding; the last keeps the final norm and
output layer. Schedules: 1F1B for VP = 1, interleaved 1F1B for VP > 1; GA micro-batches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleInterleaved1F1B

from llmb.catalog.schema import ModelSpec
from llmb.engine.models.transformer import Transformer, build_model


def chunk_ids(pp_rank: int, pp: int, vp: int) -> list[int]:
    """Model chunks held by pipeline rank ``pp_rank``, in model order."""
    return [pp_rank + v * pp for v in range(vp)]


def build_chunk(spec: ModelSpec, layers_per_chunk: tuple[int, ...], chunk: int) -> Transformer:
    """Model chunk ``chunk`` on ``meta``."""
    model = build_model(spec, "meta")
    first = sum(layers_per_chunk[:chunk])
    keep = set(range(first, first + layers_per_chunk[chunk]))
    for name in list(model.layers.keys()):
        if int(name) not in keep:
            del model.layers[name]
    if chunk != 0:
        model.tok_embeddings = None
    if chunk != len(layers_per_chunk) - 1:
        model.norm = None
        model.output = None
    return model


def build_schedule(
    chunks: list[torch.nn.Module],
    chunk_indices: list[int],
    num_chunks: int,
    n_microbatches: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    group: dist.ProcessGroup,
    device: torch.device,
):
    """Stages and the schedule. ``loss_fn`` must already be normalized for the whole global
    batch: gradients are not rescaled by the number of micro-batches."""
    stages = [
        PipelineStage(m, stage_index=c, num_stages=num_chunks, device=device, group=group)
        for m, c in zip(chunks, chunk_indices)
    ]
    if len(stages) == 1:
        return Schedule1F1B(stages[0], n_microbatches, loss_fn=loss_fn, scale_grads=False)
    return ScheduleInterleaved1F1B(stages, n_microbatches, loss_fn=loss_fn, scale_grads=False)
