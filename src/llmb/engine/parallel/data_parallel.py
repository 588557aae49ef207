"""Data parallelism: FSDP2 (``fully_shard``) by default, plain DDP as an option.

Both reduce gradients with SUM and no division: the train loop normalizes the loss by the
global number of tokens, so summed gradients are the mean gradient. (gloo's AVG has been
reported to sum; nothing here relies on it.)

Mixed precision with FSDP2: parameters are kept (sharded) in fp32 and all-gathered in bf16 for
compute; gradients are reduced in fp32.
"""

from __future__ import annotations

import inspect

import warnings

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from llmb.engine.models.transformer import Transformer

# Under TP the root's output (the logits' vocabulary shard, from DTensor's to_local) is a view,
# and FSDP2 warns on every forward that an in-place op on it would skip its backward hook.
# The loss never modifies logits in place.
warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPTransformer\) returned a view tensor")


def apply_fsdp(
    model: Transformer,
    dp_mesh: DeviceMesh,
    param_dtype: torch.dtype,
    ignored: set[nn.Parameter] | None = None,
    reshard_after_forward: bool = True,
) -> None:
    """Shard every transformer block, then the rest, over ``dp_mesh``."""
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    kwargs = dict(mesh=dp_mesh, mp_policy=mp, ignored_params=ignored or None)
    for block in model.layers.values():
        fully_shard(block, reshard_after_forward=reshard_after_forward, **kwargs)
    # The root's parameters (embeddings, final norm, output) are needed right at the end of
    # the forward and start of the backward: keep them gathered.
    fully_shard(model, reshard_after_forward=False, **kwargs)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)


def _sum_hook(group, bucket):  # no annotations: DDP checks them, and they'd be strings here
    work = dist.all_reduce(bucket.buffer(), op=dist.ReduceOp.SUM, group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def apply_ddp(model: nn.Module, group: dist.ProcessGroup) -> nn.Module:
    """Wrap ``model`` in DDP reducing with SUM (DDP itself would divide by the world size)."""
    from torch.nn.parallel import DistributedDataParallel

    # The buffers (rotary tables) are computed identically on every rank: no syncing. torch 2.13
    # names the flag forward_sync_buffers (broadcast_buffers deprecated); 2.11 has only the old one.
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    ddp = DistributedDataParallel(model, process_group=group, **no_sync)
    ddp.register_comm_hook(group, _sum_hook)
    return ddp
