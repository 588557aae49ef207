"""Megatron-LM (``training_log`` in ``megatron/training/training.py``).

`` [2026-01-27 10:49:15] iteration       10/    1000 | consumed samples:         5120 | elapsed
time per iteration (ms): 1234.5 | throughput per GPU (TFLOP/s/GPU): 456.7 | learning rate:
1.500000E-04 | global batch size:   512 | lm loss: 9.876543E+00 | loss scale: 1.0 | grad norm:
3.210 | number of skipped iterations:   0 | number of nan iterations:   0 |``.
Iterations count from 1; ``k/K`` gives progress. The step time is printed in milliseconds.
"""

from __future__ import annotations

import re

from llmb.results.parsers.base import Parser, require_throughput
from llmb.results.record import StepRecord, to_float

_HEAD = re.compile(r"\biteration\s+(\d{1,12})/\s*(\d{1,12})\s*\|")


def parse_iteration_line(text: str) -> tuple[int, int, dict[str, str]] | None:
    """``(iteration, planned iterations, {field: raw value})`` of a Megatron iteration line."""
    m = _HEAD.search(text)
    if m is None:
        return None
    fields: dict[str, str] = {}
    for part in text[m.end():].split("|"):
        key, sep, value = part.rpartition(":")
        if sep:
            fields[key.strip()] = value
    return int(m.group(1)), int(m.group(2)), fields


def record_from_fields(iteration: int, fields: dict[str, str], line_no: int, rank: int | None) -> StepRecord:
    elapsed_ms = to_float(fields.get("elapsed time per iteration (ms)"))
    return StepRecord(
        iteration=iteration,
        raw_line_no=line_no,
        step_time_s=elapsed_ms / 1000.0 if elapsed_ms is not None else None,
        tflops_per_gpu=to_float(fields.get("throughput per GPU (TFLOP/s/GPU)")),
        loss=to_float(fields.get("lm loss")),
        grad_norm=to_float(fields.get("grad norm")),
        rank=rank,
    )


class MegatronParser(Parser):
    name = "megatron"
    title = "Megatron-LM"
    marker = re.compile("elapsed time per iteration")
    detect = re.compile(r"\biteration\s+\d{1,12}/\s*\d{1,12}\s*\|.*elapsed time per iteration")
    iteration_base = 1

    def feed(self, text: str, line_no: int, rank: int | None) -> StepRecord | None:
        parsed = parse_iteration_line(text)
        if parsed is None:
            return None
        it, planned, fields = parsed
        self.progress[rank] = (it, planned)
        rec = record_from_fields(it, fields, line_no, rank)
        require_throughput(rec.step_time_s, rec.tflops_per_gpu)
        return rec
