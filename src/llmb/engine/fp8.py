"""FP8 training through torchao's float8 linear layers (CUDA only).

This path exists for H100-class GPUs and cannot run on this CPU-only machine: it is untested
here. It converts every ``nn.Linear`` except the output layer (kept in bf16, as the reference
recipes do) to ``Float8Linear`` with dynamic tensorwise scaling, on the meta model before any
parallelism is applied (torchao's documented order). MoE routers stay bf16 too (their
logits decide the routing), and routed experts are not ``nn.Linear`` modules: they run in bf16.
Under TP the layer linears use torchao's float8 TP styles (inputs cast to float8 before their
all-gather; :func:`llmb.engine.parallel.tensor.apply_tp`).
"""

from __future__ import annotations

import torch

from llmb.errors import LlmbError


def convert_to_fp8(modules) -> None:
    # Planning refused fp8 where the host has no GPU (llmb.plan.run); this is the device torch
    # actually sees (a CPU-only torch build on a GPU host, CUDA_VISIBLE_DEVICES="").
    if not torch.cuda.is_available():
        raise LlmbError("fp8 needs a CUDA GPU and this process's torch sees none (a CPU build of torch, "
                        "or CUDA_VISIBLE_DEVICES hides the GPUs)")
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        raise LlmbError(f"fp8 needs compute capability 8.9 or newer (this GPU has {major}.{minor})")
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError:
        raise LlmbError("fp8 needs torchao (pip install torchao)") from None
    config = Float8LinearConfig()
    for m in modules:
        convert_to_float8_training(
            m, config=config, module_filter_fn=lambda mod, fqn: not fqn.endswith(("output", "router"))
        )
