"""Measuring runs: one parser per log format, the step window and its statistics, the job
store and comparisons with baselines. Nothing here imports torch.

Entry points: :func:`parse_file` (a log of any size, streamed) -> :class:`ParsedLog`;
:func:`window_stats` over its records -> :class:`WindowStats`.
"""

from llmb.results.parse import LogStream, ParsedLog, parse_file, parse_stream
from llmb.results.parsers import FORMATS
from llmb.results.record import StepRecord
from llmb.results.stats import Status, Summary, Window, WindowStats, default_window, parse_window, window_stats

__all__ = [
    "FORMATS",
    "LogStream",
    "ParsedLog",
    "Status",
    "StepRecord",
    "Summary",
    "Window",
    "WindowStats",
    "default_window",
    "parse_file",
    "parse_stream",
    "parse_window",
    "window_stats",
]
