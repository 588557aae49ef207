"""llmb's own engine line, read with :func:`llmb.logline.parse_step_line` (the one definition
of that format). ``tokens_per_s`` is the whole job's; ``tflops_per_device`` per device;
``peak_mem_gib`` in GiB; ``mfu_pct`` a percentage. Iterations count from 1.
"""

from __future__ import annotations

import re

from llmb.logline import PREFIX, parse_step_line
from llmb.results.parsers.base import Parser, require_throughput
from llmb.results.record import GIB, StepRecord


class LlmbParser(Parser):
    name = "llmb"
    title = "llmb engine"
    marker = re.compile(re.escape(PREFIX))
    detect = re.compile(re.escape(PREFIX) + r"\d+/\d+")
    iteration_base = 1

    def feed(self, text: str, line_no: int, rank: int | None) -> StepRecord | None:
        line = parse_step_line(text)
        if line is None:
            return None
        v = line.values
        self.progress[rank] = (line.iteration, line.total)
        require_throughput(v.get("step_time_s"), v.get("tokens_per_s"), v.get("tflops_per_device"))
        mem_gib = v.get("peak_mem_gib")
        mfu_pct = v.get("mfu_pct")
        return StepRecord(
            iteration=line.iteration,
            raw_line_no=line_no,
            step_time_s=v.get("step_time_s"),
            tflops_per_gpu=v.get("tflops_per_device"),
            tokens_per_s=v.get("tokens_per_s"),
            loss=v.get("loss"),
            grad_norm=v.get("grad_norm"),
            mem_bytes=mem_gib * GIB if mem_gib is not None else None,
            mfu=mfu_pct / 100.0 if mfu_pct is not None else None,
            rank=rank,
        )
