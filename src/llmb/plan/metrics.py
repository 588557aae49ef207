"""Throughput metrics derived from a step time: the one place llmb computes them.

Units: seconds, tokens, FLOP; ``mfu`` is a fraction (0.55, not 55 %).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from llmb.errors import LlmbError

SECONDS_PER_DAY = 86_400.0
TOKENS_1T = 1e12


def _require_positive(name: str, value: float) -> None:
    if not value > 0:
        raise LlmbError(f"{name} must be positive, got {value}")


def tokens_per_s(seq_len: int, gbs: int, step_time_s: float) -> float:
    """Tokens processed per second by the whole job."""
    _require_positive("step time", step_time_s)
    return seq_len * gbs / step_time_s


def flops_per_gpu_per_s(flops_per_sample: float, gbs: int, step_time_s: float, gpus: int) -> float:
    """Achieved model FLOP/s per GPU."""
    _require_positive("step time", step_time_s)
    _require_positive("GPU count", gpus)
    return gbs * flops_per_sample / step_time_s / gpus


def mfu(flops_per_sample: float, gbs: int, step_time_s: float, gpus: int, peak_flops: float) -> float:
    """Model FLOPs utilization: achieved model FLOP/s per GPU over the dense peak (a fraction)."""
    _require_positive("peak FLOP/s", peak_flops)
    return flops_per_gpu_per_s(flops_per_sample, gbs, step_time_s, gpus) / peak_flops


def days_to_train(tokens_per_second: float, tokens: float = TOKENS_1T) -> float:
    """Days to process ``tokens`` at ``tokens_per_second`` (1T tokens by default)."""
    _require_positive("throughput", tokens_per_second)
    return tokens / tokens_per_second / SECONDS_PER_DAY


def step_time_from_tokens_per_s(seq_len: int, gbs: int, tokens_per_second: float) -> float:
    _require_positive("throughput", tokens_per_second)
    return seq_len * gbs / tokens_per_second


@dataclass(frozen=True)
class RunMetrics:
    """The reference tables' rows, for one step time."""

    step_time_s: float
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    tflops_per_gpu: float
    mfu: float
    days_per_1t_tokens: float
    convention: str
    peak_tflops: float

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def run_metrics(
    *,
    step_time_s: float,
    seq_len: int,
    gbs: int,
    gpus: int,
    flops_per_sample: float,
    peak_flops: float,
    convention: str = "recipe",
) -> RunMetrics:
    """All throughput metrics for one step time."""
    tps = tokens_per_s(seq_len, gbs, step_time_s)
    per_gpu = flops_per_gpu_per_s(flops_per_sample, gbs, step_time_s, gpus)
    return RunMetrics(
        step_time_s=step_time_s,
        tokens_per_s=tps,
        tokens_per_s_per_gpu=tps / gpus,
        tflops_per_gpu=per_gpu / 1e12,
        mfu=per_gpu / peak_flops,
        days_per_1t_tokens=days_to_train(tps),
        convention=convention,
        peak_tflops=peak_flops / 1e12,
    )
