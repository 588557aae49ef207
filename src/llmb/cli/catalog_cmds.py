"""Catalog and planning commands: list, show, flops, audit."""

from __future__ import annotations

from llmb.cli.app import JSON_OPTION, app, console, print_json
from llmb.catalog import default_catalog


@app.command("list")
def list_workloads(as_json: bool = JSON_OPTION) -> None:
    """List workloads with their sizes, dtypes, GPU types and scales."""
    catalog = default_catalog()
    rows = []
    for wl in catalog.workloads.values():
        for size, spec in wl.sizes.items():
            rows.append(
                {
                    "workload": wl.name,
                    "size": size,
                    "dtypes": sorted({d for r in spec.layouts for d in r.dtypes}),
                    "gpu_types": sorted({r.gpu_type for r in spec.layouts}),
                    "scales": sorted({r.gpus for r in spec.layouts}),
                }
            )
    if as_json:
        print_json(rows)
        return
    for row in rows:
        console.print(row)
