"""Bulk run specifications (``llmb submit -f runs.yaml``) and scale discovery.

A spec lists runs; each names a workload and a size, one or more dtypes, scales (GPU counts)
or none (then the catalog's published scales, filtered by ``min_scale``/``max_scale``), a
repeat count and knob overrides::

    runs:
      - workload: llama3.1
        size: 8b
        dtype: [bf16, fp8]
        scales: [8, 16]
        repeats: 2
        overrides: {max_steps: 20}
      - workload: nemotron4
        size: 340b
        dtype: fp8
        max_scale: 512
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmb.catalog.loader import Catalog
from llmb.datafile import load_model
from llmb.errors import LlmbError
from llmb.launch.knobs import BY_FIELD
from llmb.plan.recipe import scales as catalog_scales


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workload: str
    size: str
    dtype: list[str] = Field(default_factory=list)
    gpu_type: str | None = None
    scales: list[int] = Field(default_factory=list)
    min_scale: int | None = Field(default=None, gt=0)
    max_scale: int | None = Field(default=None, gt=0)
    repeats: int = Field(default=1, gt=0)
    proxy: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("dtype", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("scales")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v <= 0 for v in value):
            raise ValueError("scales must be positive")
        return value

    @field_validator("overrides")
    @classmethod
    def _known(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(BY_FIELD))
        if unknown:
            raise ValueError(f"unknown override(s) {unknown}; known: {sorted(BY_FIELD)}")
        return value


class BulkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runs: list[RunSpec] = Field(min_length=1)


@dataclass(frozen=True)
class PlannedRun:
    workload: str
    size: str
    dtype: str
    gpus: int
    repeat: int
    gpu_type: str | None = None
    proxy: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.workload} {self.size} {self.dtype} x{self.gpus}" + (f" #{self.repeat}" if self.repeat > 1 else "")


def load_bulk(path: Path) -> BulkSpec:
    return load_model(path, BulkSpec, strict=False)


def discover_scales(
    catalog: Catalog,
    workload: str,
    size: str,
    dtype: str,
    gpu_type: str | None = None,
    min_scale: int | None = None,
    max_scale: int | None = None,
    exact: list[int] | None = None,
) -> list[int]:
    """Scales to run: ``exact`` if given, else the catalog's published ones within the bounds."""
    wl = catalog.workload(workload)
    size_key, _ = catalog.size(wl, size)
    gkey = catalog.gpu_key(gpu_type) if gpu_type else None
    if exact:
        found = sorted(set(exact))
    else:
        found = catalog_scales(wl, size_key, dtype, gkey)
        if not found:
            raise LlmbError(f"{wl.name} {size_key} publishes no {dtype} scales" + (f" on {gkey}" if gkey else ""))
    bounded = [s for s in found if (min_scale is None or s >= min_scale) and (max_scale is None or s <= max_scale)]
    if not bounded:
        raise LlmbError(
            f"no scale of {wl.name} {size_key} {dtype} ({', '.join(map(str, found))}) lies within "
            f"[{min_scale or '-'}, {max_scale or '-'}]"
        )
    return bounded


def expand(spec: BulkSpec, catalog: Catalog) -> list[PlannedRun]:
    """Every (dtype, scale, repeat) combination of every run, in order."""
    planned: list[PlannedRun] = []
    for run in spec.runs:
        wl = catalog.workload(run.workload)
        size_key, _ = catalog.size(wl, run.size)
        for dtype in run.dtype or [wl.default_dtype]:
            for gpus in discover_scales(catalog, wl.name, size_key, dtype.lower(), run.gpu_type,
                                        run.min_scale, run.max_scale, run.scales):
                for repeat in range(1, run.repeats + 1):
                    planned.append(PlannedRun(wl.name, size_key, dtype.lower(), gpus, repeat,
                                              run.gpu_type, run.proxy, dict(run.overrides)))
    return planned
