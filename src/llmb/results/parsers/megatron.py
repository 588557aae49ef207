"""Megatron-LM (``training_log`` in ``megatron/training/training.py``).

`` [2026-01-27 10:49:15] iteration       10/    1000 | consumed samples:         5120 | elapsed
time per iteration (ms): 1234.5 | throughput per GPU (TFLOP/s/GPU): 456.7 | learning rate:
1.500000E-04 | global batch size:   512 | lm loss: 9.876543E+00 | loss scale: 1.0 | grad norm:
3.210 | number of skipped iterations:   0 | number of nan iterations:   0 |``.
Iterations count from 1; ``k/K`` gives progress. The step time is printed in milliseconds.
"""

from __future__ import annotations

import re

from llmb.results.parsers.base import FastLayout, Parser, compile_layout, require_throughput
from llmb.results.record import StepRecord, to_float

_HEAD = re.compile(r"\biteration\s+(\d{1,12})/\s*(\d{1,12})\s*\|")
# The same head in bytes, ASCII only and never across a line break (stricter than _HEAD: a
# line it does not match is read line by line).
_FAST_HEAD = rb"(?<![\w\x80-\xff])iteration[ \t]+(\d{1,12})/[ \t]*(\d{1,12})[ \t]*\|"
_ELAPSED = "elapsed time per iteration (ms)"
_WANTED = {_ELAPSED: "step_time_s", "throughput per GPU (TFLOP/s/GPU)": "tflops_per_gpu", "lm loss": "loss",
           "grad norm": "grad_norm"}


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

    def layout(self, text: str) -> FastLayout | None:
        m = _HEAD.search(text)
        if m is None or not text.isascii():
            return None
        parts = text[m.end():].split("|")
        keys = [p.rpartition(":")[0].strip() if ":" in p else None for p in parts]
        if _ELAPSED not in keys and "throughput per GPU (TFLOP/s/GPU)" not in keys:
            return None
        last = {key: i for i, key in enumerate(keys) if key is not None}
        pieces, fields = [], []
        for i, key in enumerate(keys):
            # Blank-padded values without blanks inside, matched possessively (fast, and
            # stricter than the line-by-line reading); a part without a colon must be blank.
            if key is None:
                piece = rb"[ \t]*+"
            else:
                piece = rb"[ \t]*+" + re.escape(key.encode()) + rb"[ \t]*+:[ \t]*+"
                if key in _WANTED and last[key] == i:
                    piece += rb"([^ \t|:\n\r]*+)[ \t]*+"
                    fields.append(_WANTED[key])
                else:
                    piece += rb"[^ \t|:\n\r]*+[ \t]*+"
            pieces.append(piece if i == 0 else rb"\|" + piece)
        return compile_layout(_FAST_HEAD, b"iteration", pieces, fields, self.marker.pattern,
                              divisors={"step_time_s": 1000.0})

    def feed(self, text: str, line_no: int, rank: int | None) -> StepRecord | None:
        parsed = parse_iteration_line(text)
        if parsed is None:
            return None
        it, planned, fields = parsed
        self.progress[rank] = (it, planned)
        rec = record_from_fields(it, fields, line_no, rank)
        require_throughput(rec.step_time_s, rec.tflops_per_gpu)
        return rec
