"""The run's outputs, behind one object: the console (a progress bar on a terminal),
``log.txt``, ``metrics.jsonl`` and TensorBoard.

Only rank 0 records steps. Notes (checkpoint lines, warnings) print on the rank that makes
them, as the recipes' logs do, and rank 0 also writes them into ``log.txt``. Every line is
flushed when written: a crash loses nothing that was recorded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from llmb.logline import format_step_line
from llmb.plan.metrics import RunMetrics

LOG_FILE = "log.txt"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class _Console:
    """A rich progress bar on a terminal; plain printing otherwise."""

    def __init__(self, total: int, bar: bool, stream: TextIO | None):
        self.stream = stream
        self.bar = None
        if bar:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True,
            )
            self.task = self.bar.add_task("steps", total=total)
            self.bar.start()

    def print(self, text: str, advance: bool = False) -> None:
        if self.bar is not None:
            self.bar.console.print(text, highlight=False, soft_wrap=True, markup=False)
            if advance:
                self.bar.advance(self.task)
        else:
            print(text, flush=True, file=self.stream or sys.stdout)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class StepRecorder:
    """Records one rank's view of a run into ``exp_dir`` (None: console only).

    ``lead`` is rank 0: it writes the files and prints the step lines; ``progress`` asks for a
    progress bar (when the console is a terminal); ``stream`` replaces stdout (``--json`` runs
    send their step lines to stderr)."""

    def __init__(self, exp_dir: Path | None, lead: bool, progress: bool = False, stream: TextIO | None = None):
        self.lead = lead
        self._progress, self._stream = progress and lead, stream
        self._console = _Console(0, False, stream)
        self._log = self._metrics = self._tb = None
        if lead and exp_dir is not None:
            self._log = open(exp_dir / LOG_FILE, "a", encoding="utf-8")
            self._metrics = open(exp_dir / METRICS_FILE, "a", encoding="utf-8")
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(exp_dir / TENSORBOARD_DIR))

    def start(self, steps_to_run: int) -> None:
        """Show the progress bar (if asked for) over the steps still to run."""
        if self._progress:
            self._console.close()
            self._console = _Console(steps_to_run, True, self._stream)

    def note(self, text: str) -> None:
        self._console.print(text)
        if self._log is not None:
            self._log.write(text + "\n")
            self._log.flush()

    def step(self, step: int, steps: int, m: RunMetrics, loss: float, grad_norm: float, lr: float,
             peak_mem_gib: float) -> None:
        """One step's line, metrics record and TensorBoard scalars (rank 0)."""
        if not self.lead:
            return
        line = format_step_line(
            step, steps, step_time_s=m.step_time_s, tokens_per_s=m.tokens_per_s, tflops_per_device=m.tflops_per_gpu,
            mfu_pct=m.mfu * 100, loss=loss, grad_norm=grad_norm, peak_mem_gib=peak_mem_gib,
        )
        self._console.print(line, advance=True)
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()
        if self._metrics is not None:
            record = {
                "step": step, "step_time_s": m.step_time_s, "tokens_per_s": m.tokens_per_s,
                "tflops_per_device": m.tflops_per_gpu, "mfu": m.mfu, "loss": loss, "grad_norm": grad_norm,
                "lr": lr, "peak_mem_gib": peak_mem_gib,
            }
            self._metrics.write(json.dumps(record) + "\n")
            self._metrics.flush()
        if self._tb is not None:
            for key, value in (("loss", loss), ("grad_norm", grad_norm), ("lr", lr)):
                self._tb.add_scalar(f"train/{key}", value, step)
            self._tb.add_scalar("perf/step_time_s", m.step_time_s, step)
            self._tb.add_scalar("perf/tokens_per_s", m.tokens_per_s, step)
            self._tb.add_scalar("perf/mfu_pct", m.mfu * 100, step)

    def stop_progress(self) -> None:
        self._console.close()

    def close(self) -> None:
        self._console.close()
        for f in (self._log, self._metrics):
            if f is not None:
                f.close()
        if self._tb is not None:
            self._tb.close()
        self._log = self._metrics = self._tb = None
