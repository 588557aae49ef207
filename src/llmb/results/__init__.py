"""Measuring runs. Nothing here imports torch.

* :mod:`~llmb.results.parsers` — one parser per log format (NeMo 1 tqdm, NeMo 2, Megatron-LM,
  Megatron-Bridge, MaxText, torchtitan, llmb), all yielding :class:`StepRecord`;
* :mod:`~llmb.results.reader` and :mod:`~llmb.results.parse` — streaming any size of log,
  format autodetection, rank selection: :func:`parse_file` -> :class:`ParsedLog`;
* :mod:`~llmb.results.stats` — the step window, its statistics and the run status;
* :mod:`~llmb.results.identity` and :mod:`~llmb.results.analysis` — what was run (options or
  folder names) and the reference metrics through :mod:`llmb.plan`;
* :mod:`~llmb.results.store` — the SQLite job store; :mod:`~llmb.results.compare` — baselines,
  runs, saved sets and history.
"""

from llmb.results.analysis import RunResult, analyze, analyze_logs
from llmb.results.identity import RunSpec, infer_spec
from llmb.results.parse import LogStream, ParsedLog, parse_file, parse_stream
from llmb.results.parsers import FORMATS
from llmb.results.record import StepRecord
from llmb.results.stats import Status, Summary, Window, WindowStats, default_window, parse_window, window_stats
from llmb.results.store import Store

__all__ = [
    "FORMATS",
    "LogStream",
    "ParsedLog",
    "RunResult",
    "RunSpec",
    "Status",
    "StepRecord",
    "Store",
    "Summary",
    "Window",
    "WindowStats",
    "analyze",
    "analyze_logs",
    "default_window",
    "infer_spec",
    "parse_file",
    "parse_stream",
    "parse_window",
    "window_stats",
]
