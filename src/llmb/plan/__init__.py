"""Planning: what a training run needs and costs, before it runs.

Modules, by what each owns:

* :mod:`~llmb.plan.layout`: layout algebra (GPUs = TP x CP x PP x DP, derived sizes);
* :mod:`~llmb.plan.shapes`: model shapes - parameter counts (per layer, per pipeline rank,
  whole model), byte widths, recompute levels;
* :mod:`~llmb.plan.flops`: FLOPs per sample under named conventions;
* :mod:`~llmb.plan.metrics`: throughput metrics from a step time;
* :mod:`~llmb.plan.recipe`: catalog requests resolved into recipes (and weak scaling);
* :mod:`~llmb.plan.audit`: the catalog's published derived numbers, recomputed;
* :mod:`~llmb.plan.memory`: the per-GPU memory model;
* :mod:`~llmb.plan.network`: the network model collectives are priced with;
* :mod:`~llmb.plan.predict`: the step-time model;
* :mod:`~llmb.plan.forecast`: memory + step time + throughput for one recipe, and the
  baselines' step times;
* :mod:`~llmb.plan.search`: layout search;
* :mod:`~llmb.plan.calibrate`: the step-time model's fitted efficiencies and their
  cross-validation.

Pure Python: nothing here imports torch; only the calibration reads a file (its own).
"""

from llmb.plan.flops import (
    CONVENTIONS,
    FlopsBreakdown,
    flops_breakdown,
    flops_per_sample,
)
from llmb.plan.layout import DerivedLayout, Layout, derive
from llmb.plan.metrics import RunMetrics, days_to_train, mfu, run_metrics, tokens_per_s
from llmb.plan.recipe import Recipe, resolve, scales
from llmb.plan.shapes import ParamCount, param_count

__all__ = [
    "CONVENTIONS",
    "DerivedLayout",
    "FlopsBreakdown",
    "Layout",
    "ParamCount",
    "Recipe",
    "RunMetrics",
    "days_to_train",
    "derive",
    "flops_breakdown",
    "flops_per_sample",
    "mfu",
    "param_count",
    "resolve",
    "run_metrics",
    "scales",
    "tokens_per_s",
]
