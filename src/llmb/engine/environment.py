"""Environment facts the engine records and ``llmb doctor`` prints (torch side)."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def device_for(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def torch_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "backends": {
            "gloo": dist.is_available() and dist.is_gloo_available(),
            "nccl": dist.is_available() and dist.is_nccl_available(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "openmp": torch.backends.openmp.is_available(),
        },
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
    }
    return facts


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory of this process in GiB: CUDA allocator peak, or on CPU the resident-set
    high-water mark (includes everything the process touched, not just tensors)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so timings measure the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
