"""The workload catalog: recipes, published baselines and accelerators, as validated data."""

from llmb.catalog.loader import Catalog, default_catalog, load_catalog, load_workload_file
from llmb.catalog.schema import (
    DTYPES,
    Baseline,
    GpuSpec,
    LayoutRow,
    ModelSpec,
    MoESpec,
    SizeSpec,
    Workload,
)

__all__ = [
    "DTYPES",
    "Baseline",
    "Catalog",
    "GpuSpec",
    "LayoutRow",
    "ModelSpec",
    "MoESpec",
    "SizeSpec",
    "Workload",
    "default_catalog",
    "load_catalog",
    "load_workload_file",
]
