"""The measured GEMM ceiling: the MFU denominator on CPUs, which have no datasheet peak.

Times large square matrix multiplications (the best a model's GEMMs could do on this machine
with this torch and thread count) and caches the result under ``LLMB_HOME`` (default
``~/.llmb``), keyed by torch version, thread count, CPU and dtype. Units: FLOP/s.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from llmb.errors import LlmbError
from llmb.paths import llmb_home

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SIZE = 2048


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cache_key(dtype: str) -> str:
    return f"{torch.__version__}|threads={torch.get_num_threads()}|{_cpu_model()}|{dtype}"


def cache_file() -> Path:
    return llmb_home() / "gemm_ceiling.json"


def measure_gemm_flops(dtype: str, size: int = SIZE, repeats: int = 12) -> float:
    """Best achieved FLOP/s of ``size`` x ``size`` matmuls in ``dtype`` on the CPU."""
    if dtype not in DTYPES:
        raise LlmbError(f"no GEMM ceiling for {dtype} on CPU (measured: {', '.join(DTYPES)})")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(DTYPES[dtype])
    b = torch.randn(size, size, generator=gen).to(DTYPES[dtype])
    for _ in range(3):  # warm up oneDNN's kernels and the cores' clocks
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def _load() -> dict:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}


def cached_ceiling(dtype: str) -> float | None:
    entry = _load().get(cache_key(dtype))
    return float(entry["flops"]) if entry else None


#: why the last measurement could not be cached (None: it was)
last_cache_error: str | None = None


def store_ceiling(dtype: str, flops: float) -> float:
    """Cache a measurement; returns the ceiling now cached. The ceiling is the best the
    machine has been seen to do: a measurement taken while other work loads the cores comes
    out low and must not lower it (that would push MFU above 100 %)."""
    data = _load()
    old = data.get(cache_key(dtype))
    if old and float(old["flops"]) >= flops:
        return float(old["flops"])
    data[cache_key(dtype)] = {"flops": flops, "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    global last_cache_error
    tmp = cache_file().with_suffix(".tmp")
    try:
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(cache_file())
        last_cache_error = None
    except OSError as exc:
        # A read-only or full home only costs a re-measurement next time; `llmb doctor` says so.
        last_cache_error = f"{cache_file()}: {exc.strerror or exc}"
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return flops


def gemm_ceiling(dtype: str, refresh: bool = False) -> tuple[float, bool]:
    """(FLOP/s, came_from_cache) for ``dtype``, measuring and caching when needed."""
    if not refresh:
        cached = cached_ceiling(dtype)
        if cached:
            return cached, True
    flops = store_ceiling(dtype, measure_gemm_flops(dtype))
    return flops, False
