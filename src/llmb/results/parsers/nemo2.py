"""NeMo 2 (Lightning progress printer, ``nemo.lightning``).

``Training epoch 0, iteration 49/49 | lr: 7.496e-06 | global_batch_size: 128 | global_step: 49
| peak_memory_usage: 70833405952 | memory_allocated: 44271689728 | reduced_train_loss: 11.96 |
train_step_timing in s: 12.39 | consumed_samples: 6400`` (optionally ``| TFLOPS_per_GPU: ...``).
``iteration k/K`` counts from 0, so the last of 50 steps is ``49/49``. Memory is in bytes
(newer releases print ``max_memory_reserved`` / ``max_memory_allocated`` instead).
"""

from __future__ import annotations

import re

from llmb.results.parsers.base import FastLayout, Parser, compile_layout, require_throughput
from llmb.results.record import StepRecord, to_float

_HEAD = re.compile(r"Training epoch \d{1,9}, iteration (\d{1,12})/(\d{1,12})")
_TIMING = "train_step_timing in s"
_FAST_HEAD = rb"Training epoch \d{1,9}, iteration (\d{1,12})/(\d{1,12})"
#: key -> record field; memory is the first of these keys the line has
_WANTED = {_TIMING: "step_time_s", "TFLOPS_per_GPU": "tflops_per_gpu", "reduced_train_loss": "loss",
           "grad_norm": "grad_norm"}
_MEMORY_KEYS = ("peak_memory_usage", "max_memory_reserved")


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

    def progress_of(self, iteration: int, planned: int) -> tuple[int, int]:
        return iteration + 1, planned + 1

    def layout(self, text: str) -> FastLayout | None:
        m = _HEAD.search(text)
        if m is None:
            return None
        first, *parts = text[m.end():].split(" | ")
        if first or not text.isascii():
            return None  # not NeMo's exact separators: the tolerant reading only
        keys = [p.partition(": ")[0] for p in parts]
        if _TIMING not in keys:
            return None
        wanted = dict(_WANTED)
        memory = next((k for k in _MEMORY_KEYS if k in keys), None)
        if memory is not None:
            wanted[memory] = "mem_bytes"
        last = {key: i for i, key in enumerate(keys)}  # a repeated key: the last one counts
        pieces, fields = [], []
        for i, part in enumerate(parts):
            key, sep, _ = part.partition(": ")
            piece = rb" \| " + re.escape(key.encode())
            if sep:
                capture = key in wanted and last[key] == i
                # values without blanks (\S: one class test per byte), possessively: far
                # faster to match, and stricter
                piece += rb": (\S*+)" if capture else rb": \S*+"
                if capture:
                    fields.append(wanted[key])
            pieces.append(piece)
        return compile_layout(_FAST_HEAD, b"Training epoch", pieces, fields, self.marker.pattern)

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
