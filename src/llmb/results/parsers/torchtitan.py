"""torchtitan (``components/metrics.py``).

``[rank0]:[titan] 2025-10-02 10:44:16,089 - root - INFO - step:  2  loss:  8.0111  grad_norm:
2087.1572  memory:  1.12GiB(1.18%)  tps: 146,261  tflops: 10.46  mfu: 1.06%``, usually in ANSI
colours. ``tps`` is tokens per second *per device*; ``memory`` is the peak reserved memory in
GiB; ``mfu`` may print ``N/A``. Older versions say ``wps`` for ``tps`` and lack ``grad_norm``.
No step time is printed: it follows from tokens/s once the batch is known (``llmb.plan``).
Steps count from 1.
"""

from __future__ import annotations

import re

from llmb.results.parsers.base import Parser, require_throughput
from llmb.results.record import GIB, MIB, StepRecord, to_float

# "validate step: N  loss: ..." lines are evaluation, not training steps.
_HEAD = re.compile(r"(?<![\w])(?<!validate )(?<!validation )step:\s*(\d{1,12})\s+(?=\w+:)", re.IGNORECASE)
_PAIR = re.compile(r"(\w+):\s*(\S+)")
_UNITS = {"gib": GIB, "mib": MIB, "gb": 1e9, "mb": 1e6}
_MEM = re.compile(r"([\d.]+)\s*(GiB|MiB|GB|MB)", re.IGNORECASE)


def _mem_bytes(raw: str | None) -> float | None:
    if raw is None:
        return None
    m = _MEM.match(raw)
    if m is None:
        return None
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


class TorchtitanParser(Parser):
    name = "torchtitan"
    title = "torchtitan"
    marker = re.compile("step:")
    detect = re.compile(r"(?<![\w])(?<!validate )(?<!validation )step:\s*\d{1,12}\s+loss:", re.IGNORECASE)
    iteration_base = 1

    def feed(self, text: str, line_no: int, rank: int | None) -> StepRecord | None:
        m = _HEAD.search(text)
        if m is None:
            return None
        fields = dict(_PAIR.findall(text, m.end()))
        tps = to_float(fields.get("tps", fields.get("wps")))
        tflops = to_float(fields.get("tflops"))
        require_throughput(tps, tflops)
        mfu_pct = to_float(fields.get("mfu"))  # "N/A" -> None
        return StepRecord(
            iteration=int(m.group(1)),
            raw_line_no=line_no,
            tflops_per_gpu=tflops,
            tokens_per_s_per_gpu=tps,
            loss=to_float(fields.get("loss")),
            grad_norm=to_float(fields.get("grad_norm")),
            mem_bytes=_mem_bytes(fields.get("memory")),
            mfu=mfu_pct / 100.0 if mfu_pct is not None else None,
            rank=rank,
        )
