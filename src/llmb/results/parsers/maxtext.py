"""MaxText (``metric_logger.py``).

``completed step: 49, seconds: 7.908, TFLOP/s/device: 460.480, Tokens/s/device: 1035.970,
total_weights: 524288, loss: 0.000``. Newer versions add fields (``lm_loss``, ``perplexity``,
...) and log through absl, which prefixes ``I0822 10:00:00.000000 140000 metric_logger.py:123]``.
Steps count from 0 (some trainers from 1). Throughput is per device. The first steps include
compilation, and with asynchronous dispatch a step can show an implausibly short time and huge
TFLOP/s: these are logged values and kept as such; the statistics window skips them.
Other lines such as ``Train step N training loss`` are a different format and are not counted.
"""

from __future__ import annotations

import re

from llmb.results.parsers.base import Parser, require_throughput
from llmb.results.record import StepRecord, to_float

_HEAD = re.compile(r"completed step: (\d{1,12}),")


class MaxtextParser(Parser):
    name = "maxtext"
    title = "MaxText"
    marker = re.compile("completed step: ")
    detect = re.compile(r"completed step: \d{1,12}, seconds: ")
    iteration_base = 0

    def feed(self, text: str, line_no: int, rank: int | None) -> StepRecord | None:
        m = _HEAD.search(text)
        if m is None:
            return None
        fields: dict[str, str] = {}
        for part in text[m.end():].split(","):
            key, sep, value = part.partition(":")
            if sep:
                fields[key.strip()] = value
        step = to_float(fields.get("seconds"))
        tflops = to_float(fields.get("TFLOP/s/device"))
        tokens = to_float(fields.get("Tokens/s/device"))
        require_throughput(step, tflops, tokens)
        return StepRecord(
            iteration=int(m.group(1)),
            raw_line_no=line_no,
            step_time_s=step,
            tflops_per_gpu=tflops,
            tokens_per_s_per_gpu=tokens,
            loss=to_float(fields.get("loss")),
            grad_norm=to_float(fields.get("grad_norm")),
            rank=rank,
        )
