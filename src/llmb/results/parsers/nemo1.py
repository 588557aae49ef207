"""NeMo 1 (PyTorch Lightning tqdm progress bar).

``Epoch 0: : 100%|██████████| 100/100 [07:57<00:00, reduced_train_loss=7.310, global_step=99.00,
consumed_samples=25600.0, train_step_timing in s=3.590]``. The iteration is ``global_step`` as
printed (the tqdm counter runs ahead of it by one, or more when it counts validation batches);
the tqdm ``n/N`` counter says whether the run reached its end. tqdm rewrites the line with
carriage returns, so one physical line holds many updates; the reader splits them.
"""

from __future__ import annotations

import re

from llmb.results.parsers.base import Parser, require_throughput
from llmb.results.record import NUM, StepRecord, to_float

_STEP = re.compile(r"global_step=(" + NUM + ")", re.IGNORECASE)
_TIME = re.compile(r"train_step_timing in s=(" + NUM + ")", re.IGNORECASE)
_LOSS = re.compile(r"reduced_train_loss=(" + NUM + ")", re.IGNORECASE)
_TFLOPS = re.compile(r"TFLOPS_per_GPU=(" + NUM + ")", re.IGNORECASE)
_COUNTER = re.compile(r"\|\s*(\d{1,12})/(\d{1,12}) \[")


class Nemo1Parser(Parser):
    name = "nemo1"
    title = "NeMo 1 (tqdm)"
    marker = re.compile("train_step_timing in s=")
    detect = re.compile(r"global_step=.*train_step_timing in s=|train_step_timing in s=.*global_step=")
    iteration_base = 0

    def feed(self, text: str, line_no: int, rank: int | None) -> StepRecord | None:
        step_m = _STEP.search(text)
        if step_m is None:
            return None
        iteration = to_float(step_m.group(1))
        if iteration is None or iteration != iteration or iteration in (float("inf"), float("-inf")):
            raise ValueError("global_step is not a number")
        time_m = _TIME.search(text)
        tflops_m = _TFLOPS.search(text)
        step = to_float(time_m.group(1)) if time_m else None
        tflops = to_float(tflops_m.group(1)) if tflops_m else None
        counter = _COUNTER.search(text)
        if counter:
            self.progress[rank] = (int(counter.group(1)), int(counter.group(2)))
        require_throughput(step, tflops)
        loss_m = _LOSS.search(text)
        return StepRecord(
            iteration=int(iteration),
            raw_line_no=line_no,
            step_time_s=step,
            tflops_per_gpu=tflops,
            loss=to_float(loss_m.group(1)) if loss_m else None,
            rank=rank,
        )
