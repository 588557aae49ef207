"""NeMo 2 (Lightning progress printer, ``nemo.lightning``).

``Training epoch 0, iteration 49/49 | lr: 7.496e-06 | global_batch_size: 128 | global_step: 49
| peak_memory_usage: 70833405952 | memory_allocated: 44271689728 | reduced_train_loss: 11.96 |
train_step_timing in s: 12.39 | consumed_samples: 6400`` (optionally ``| TFLOPS_per_GPU: ...``).
``iteration k/K`` counts from 0, so the last of 50 steps is ``49/49``. Memory is in bytes
(newer releases print ``max_memory_reserved`` / ``max_memory_allocated`` instead).
"""

from __future__ import annotations

import re

from llmb.results.parsers.base import Parser, require_throughput
from llmb.results.record import StepRecord, to_float

_HEAD = re.compile(r"Training epoch \d{1,9}, iteration (\d{1,12})/(\d{1,12})")
_TIMING = "train_step_timing in s"


def _fields(rest: str) -> dict[str, str]:
    """``| key: value`` pairs. The fast path assumes NeMo's exact separators (this is the hot
    loop of a multi-GB log); odd spacing falls back to a tolerant split."""
    fields = {}
    for part in rest.split(" | "):
        key, _, value = part.partition(": ")
        fields[key] = value
    if _TIMING not in fields:
        fields = {}
        for part in rest.split("|"):
            key, sep, value = part.partition(":")
            if sep:
                fields[key.strip()] = value
    return fields


class Nemo2Parser(Parser):
    name = "nemo2"
    title = "NeMo 2"
    marker = re.compile("Training epoch ")
    detect = _HEAD
    iteration_base = 0

    def feed(self, text: str, line_no: int, rank: int | None) -> StepRecord | None:
        m = _HEAD.search(text)
        if m is None:
            return None
        fields = _fields(text[m.end():])
        it, last = int(m.group(1)), int(m.group(2))
        step = to_float(fields.get(_TIMING))
        tflops = to_float(fields.get("TFLOPS_per_GPU"))
        self.progress[rank] = (it + 1, last + 1)
        if step is None and tflops is None:
            require_throughput(step, tflops)  # raises: a step head without any speed field
        return StepRecord(
            iteration=it,
            raw_line_no=line_no,
            step_time_s=step,
            tflops_per_gpu=tflops,
            loss=to_float(fields.get("reduced_train_loss")),
            grad_norm=to_float(fields.get("grad_norm")),
            # older releases print peak_memory_usage, newer ones max_memory_reserved (bytes)
            mem_bytes=to_float(fields.get("peak_memory_usage", fields.get("max_memory_reserved"))),
            rank=rank,
        )
