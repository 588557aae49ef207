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

from __future__ import annotations

from importlib import import_module
from typing import Any

# Exported names and their modules, imported on first use (PEP 562): a command that needs only
# the job store does not pay for the parsers and the analysis.
_EXPORTS = {
    "FORMATS": "parsers",
    "LogStream": "parse",
    "ParsedLog": "parse",
    "RunResult": "analysis",
    "RunSpec": "identity",
    "Status": "stats",
    "StepRecord": "record",
    "Store": "store",
    "Summary": "stats",
    "Window": "stats",
    "WindowStats": "stats",
    "analyze": "analysis",
    "analyze_logs": "analysis",
    "default_window": "stats",
    "infer_spec": "identity",
    "parse_file": "parse",
    "parse_stream": "parse",
    "parse_window": "stats",
    "window_stats": "stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmb.results' has no attribute {name!r}")
    value = getattr(import_module(f"llmb.results.{module}"), name)
    globals()[name] = value
    return value
