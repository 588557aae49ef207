"""Megatron-Bridge: the Megatron-LM iteration line plus a separate throughput line per logged
step, ``Step Time : 9.09s GPU utilization: 663.5MODEL_TFLOP/s/GPU`` (older releases spelled it
``GPU utilization: 59892.5TFLOP/s/GPU``, with implausible values).

The throughput line carries no iteration number and is printed *before* the iteration line of
the same step, so the two are paired by position: the k-th throughput line belongs to the k-th
iteration line (per rank). The step time comes from the throughput line, as logged (seconds,
two decimals); an iteration line left without a partner keeps Megatron's elapsed time.
Throughput lines left without an iteration line (an excerpt, or a log whose iteration lines
were filtered out) still count, in order: numbered on from the rank's last iteration line, or
from 1 when it printed none.
"""

from __future__ import annotations

import re
from collections import deque

from llmb.results.parsers.base import Parser, has_throughput
from llmb.results.parsers.megatron import parse_iteration_line, record_from_fields
from llmb.results.record import NUM, StepRecord, to_float

# Newer releases insert fields: "Step Time: 0.50s , 32680.36 tok/s/gpu, GPU utilization: 257.1
# MODEL_TFLOP/s/GPU , Peak Mem: 64.5GB".
_STEP_TIME = re.compile(
    r"Step Time\s*:\s*(" + NUM + r")\s*s\b(?:(.{0,80}?)GPU utilization\s*:\s*(" + NUM + r")\s*(?:MODEL_)?TFLOP/s/GPU)?",
    re.IGNORECASE,
)
_TOKENS = re.compile(r"(" + NUM + r")\s*tok/s/gpu", re.IGNORECASE)
_PEAK_MEM = re.compile(r"Peak Mem\s*:\s*(" + NUM + r")\s*GB", re.IGNORECASE)


class MbridgeParser(Parser):
    name = "mbridge"
    title = "Megatron-Bridge"
    marker = re.compile("elapsed time per iteration|Step Time")
    detect = _STEP_TIME
    iteration_base = 1

    def __init__(self) -> None:
        super().__init__()
        #: (step s, TFLOP/s/GPU, tokens/s/GPU, peak memory bytes, line) per rank, waiting for an
        #: iteration line
        self._times: dict[int | None, deque[tuple[float | None, ...]]] = {}
        #: the last iteration line of each rank
        self._last_it: dict[int | None, int] = {}
        self._iters: dict[int | None, deque[StepRecord]] = {}
        #: throughput lines that never found an iteration line
        self.unpaired = 0

    def feed(self, text: str, line_no: int, rank: int | None) -> StepRecord | None:
        m = _STEP_TIME.search(text)
        if m is not None:
            tokens = _TOKENS.search(m.group(2) or "")
            mem = _PEAK_MEM.search(text, m.end())
            self._times.setdefault(rank, deque()).append(
                (
                    to_float(m.group(1)),
                    to_float(m.group(3)) if m.group(3) else None,
                    to_float(tokens.group(1)) if tokens else None,
                    # "GB" read as 1e9 bytes, as printed; the log does not say GiB
                    to_float(mem.group(1)) * 1e9 if mem and to_float(mem.group(1)) is not None else None,
                    line_no,
                )
            )
            return self._pair(rank)
        parsed = parse_iteration_line(text)
        if parsed is None:
            return None
        it, planned, fields = parsed
        self.progress[rank] = (it, planned)
        self._last_it[rank] = it
        self._iters.setdefault(rank, deque()).append(record_from_fields(it, fields, line_no, rank))
        return self._pair(rank)

    def _pair(self, rank: int | None) -> StepRecord | None:
        times, iters = self._times.get(rank), self._iters.get(rank)
        if not times or not iters:
            return None
        step_s, tflops, tokens, mem, _ = times.popleft()
        rec = iters.popleft()
        return rec._replace(
            step_time_s=step_s if step_s is not None else rec.step_time_s,
            tflops_per_gpu=tflops if tflops is not None else rec.tflops_per_gpu,
            tokens_per_s_per_gpu=tokens,
            mem_bytes=mem,
        )

    def finish(self) -> list[StepRecord]:
        self.unpaired = sum(len(q) for q in self._times.values())
        left = [r for q in self._iters.values() for r in q if has_throughput(r.step_time_s, r.tflops_per_gpu)]
        for rank, times in self._times.items():
            it = self._last_it.get(rank, self.iteration_base - 1)
            for step_s, tflops, tokens, mem, line_no in times:
                it += 1
                left.append(StepRecord(iteration=it, raw_line_no=int(line_no), step_time_s=step_s, tflops_per_gpu=tflops,
                                       tokens_per_s_per_gpu=tokens, mem_bytes=mem, rank=rank))
        return sorted(left, key=lambda r: r.raw_line_no)
