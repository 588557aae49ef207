"""Loading the catalog's YAML files into typed objects.

The package ships one YAML file per workload in ``catalog/workloads/`` and the accelerator
table in ``catalog/hardware.yaml``. More workload folders can be added without touching the
package through ``LLMB_CATALOG_PATH`` (folders separated by ``os.pathsep``); a workload found
there replaces a shipped one of the same name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from llmb.catalog.schema import Baseline, GpuSpec, SizeSpec, Workload, fill_releases
from llmb.datafile import read_yaml, validate
from llmb.errors import CatalogError

PACKAGE_DIR = Path(__file__).resolve().parent
WORKLOADS_DIR = PACKAGE_DIR / "workloads"
HARDWARE_FILE = PACKAGE_DIR / "hardware.yaml"
CATALOG_PATH_ENV = "LLMB_CATALOG_PATH"


def _normalize(name: str) -> str:
    """Fold case and the separators people use interchangeably (``Llama-3.1`` = ``llama3.1``)."""
    return "".join(ch for ch in name.lower() if ch not in " _-")


def load_workload_file(path: Path) -> Workload:
    """Load and validate one workload file."""
    data = read_yaml(path, CatalogError)
    if not isinstance(data, dict):
        raise CatalogError(f"{path.name}: expected a mapping at the top level")
    workload = validate(Workload, fill_releases(data), path.name, error=CatalogError)
    if _normalize(workload.name) != _normalize(path.stem):
        raise CatalogError(
            f"{path.name}: name {workload.name!r} must match the file name {path.stem!r}"
        )
    return workload


def load_hardware_file(path: Path) -> dict[str, GpuSpec]:
    data = read_yaml(path, CatalogError)
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), dict):
        raise CatalogError(f"{path.name}: expected a mapping with a 'gpus' table")
    gpus: dict[str, GpuSpec] = {}
    for key, entry in data["gpus"].items():
        gpus[str(key)] = validate(GpuSpec, entry, path.name, error=CatalogError)
    return gpus


def _workload_dirs() -> list[Path]:
    dirs = [WORKLOADS_DIR]
    extra = os.environ.get(CATALOG_PATH_ENV, "")
    dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    return dirs


@dataclass(frozen=True)
class Catalog:
    """All workloads and accelerators, with name lookups that forgive case and separators."""

    workloads: dict[str, Workload]
    gpus: dict[str, GpuSpec]
    files: dict[str, Path] = field(default_factory=dict)

    def workload(self, name: str) -> Workload:
        wanted = _normalize(name)
        for wl in self.workloads.values():
            if wanted == _normalize(wl.name) or wanted in {_normalize(a) for a in wl.aliases}:
                return wl
        known = ", ".join(sorted(self.workloads))
        raise CatalogError(f"unknown workload {name!r} (known: {known})")

    def size(self, workload: Workload, size: str) -> tuple[str, SizeSpec]:
        wanted = _normalize(size)
        for key, spec in workload.sizes.items():
            if _normalize(key) == wanted:
                return key, spec
        raise CatalogError(
            f"{workload.name} has no size {size!r} (sizes: {', '.join(workload.sizes)})"
        )

    def gpu_key(self, name: str) -> str:
        wanted = _normalize(name)
        for key, spec in self.gpus.items():
            if wanted == _normalize(key) or wanted in {_normalize(a) for a in spec.aliases}:
                return key
        raise CatalogError(f"unknown GPU type {name!r} (known: {', '.join(self.gpus)})")

    def gpu(self, name: str) -> GpuSpec:
        return self.gpus[self.gpu_key(name)]

    def baselines(self) -> list[tuple[Workload, str, Baseline]]:
        return [
            (wl, size_name, b)
            for wl in self.workloads.values()
            for size_name, size in wl.sizes.items()
            for b in size.baselines
        ]


def load_catalog(extra_dirs: list[Path] | None = None) -> Catalog:
    """Load every workload file and the hardware table; errors name the file and the field."""
    workloads: dict[str, Workload] = {}
    files: dict[str, Path] = {}
    for directory in _workload_dirs() + list(extra_dirs or []):
        if not directory.is_dir():
            raise CatalogError(f"catalog folder {directory} does not exist")
        for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
            wl = load_workload_file(path)
            workloads[wl.name] = wl
            files[wl.name] = path
    gpus = load_hardware_file(HARDWARE_FILE)
    catalog = Catalog(workloads=workloads, gpus=gpus, files=files)
    _check_references(catalog)
    return catalog


def _check_references(catalog: Catalog) -> None:
    """Every GPU type a row names must exist in the hardware table."""
    for wl in catalog.workloads.values():
        for size_name, size in wl.sizes.items():
            for row in (*size.layouts, *size.baselines):
                if row.gpu_type not in catalog.gpus:
                    raise CatalogError(
                        f"{catalog.files[wl.name].name}: size {size_name} names GPU type "
                        f"{row.gpu_type!r}, not in the hardware table ({', '.join(catalog.gpus)})"
                    )
        if wl.default_gpu_type not in catalog.gpus:
            raise CatalogError(
                f"{catalog.files[wl.name].name}: default_gpu_type {wl.default_gpu_type!r} "
                "is not in the hardware table"
            )


@lru_cache(maxsize=1)
def _cached(extra: str) -> Catalog:
    return load_catalog()


def default_catalog() -> Catalog:
    """The catalog as configured by the environment, loaded once per process."""
    return _cached(os.environ.get(CATALOG_PATH_ENV, ""))
