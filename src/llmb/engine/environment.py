"""Environment facts the engine records (``environment.json``) and ``llmb doctor`` prints."""

from __future__ import annotations

import os
import platform
import socket
import sys
from datetime import datetime, timezone
from typing import Any

import torch
import torch.distributed as dist


def device_for(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def host_facts() -> dict[str, Any]:
    """Facts about the host and Python."""
    from llmb import __version__

    return {
        "llmb_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "utc_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model as /proc/cpuinfo says it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def environment_facts() -> dict[str, Any]:
    """Everything ``environment.json`` holds: host, Python and torch."""
    return {**host_facts(), **torch_facts()}


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
