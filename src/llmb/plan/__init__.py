"""Planning: layout algebra, FLOPs conventions, metrics, recipes and (later) prediction.

Pure Python: nothing here imports torch or touches files.
"""

from llmb.plan.flops import CONVENTIONS, FlopsBreakdown, ParamCount, flops_breakdown, flops_per_sample, param_count
from llmb.plan.layout import DerivedLayout, Layout, derive
from llmb.plan.metrics import RunMetrics, days_to_train, mfu, run_metrics, tokens_per_s
from llmb.plan.recipe import Recipe, resolve, scales

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
