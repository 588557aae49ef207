"""The step-time model's GEMM size knee against measured H100 GEMMs. XLA's matmul interpolator
ships a table of measured BF16 GEMM throughput on sm_90 (375 shapes up to 4096 per dimension,
``tests/data/xla_sm90_bf16_matmul.csv``); the calibrated model prices one dense GEMM at
``gemm_share`` of peak. The knee was fitted on published step times alone, so the table is an
independent check of it. Compared are shares relative to 4096^3 (the model's ceiling is what a
GEMM reaches inside a training step, which the isolated measurement does not include; its
ratio to the table's best is printed on its own). A batched GEMM counts as one of ``b m`` rows.

Prints, per class of shapes, the rms, max and mean log error of the model's shape factor, the
same for no knee and for the knee that fits the first class best, and the two comparisons
that bear on Grok-1's expert GEMMs: 2048 against 8192 rows, 2048 against 4096 reduction length.
The classes: every dimension at least 2048; a training step's (at least 4096 rows, n and k at
least 1024); every dimension at least 1024, which adds GEMMs of a few GFLOP whose launch and
tile-wave costs no knee describes (the model has no per-kernel cost; a training step's GEMMs
are far larger).

Takes about a second. Run: .venv/bin/python benchmarks/predict_gemm_shapes.py [--json]
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

from llmb.catalog import default_catalog
from llmb.plan.calibrate import stored_efficiency
from llmb.plan.predict import gemm_share

TABLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "xla_sm90_bf16_matmul.csv"
REFERENCE = (1, 4096, 4096, 4096)


def measured() -> dict[tuple[int, int, int, int], float]:
    """(b, m, n, k) -> measured FLOP/s."""
    with TABLE.open() as f:
        return {tuple(int(r[c]) for c in "bmnk"): float(r["flops_per_s"]) for r in csv.DictReader(f)}


CLASSES = {
    "dims >= 2048": lambda b, m, n, k: min(m, n, k) >= 2048,
    "training": lambda b, m, n, k: b * m >= 4096 and m >= 1024 and min(n, k) >= 1024,
    "dims >= 1024": lambda b, m, n, k: min(m, n, k) >= 1024,
}


def errors(table: dict, eff, cls: str) -> list[float]:
    """Log errors (model over measured) of each shape's share relative to the reference shape."""
    gpu = default_catalog().gpu("h100")

    def share(b, m, n, k):
        return gemm_share(b * m, n, k, gpu, "bf16", eff)

    ref_model, ref_measured = share(*REFERENCE), table[REFERENCE]
    return [math.log((share(*key) / ref_model) / (v / ref_measured))
            for key, v in table.items() if CLASSES[cls](*key)]


def summary(errs: list[float]) -> dict[str, float]:
    pct = [100 * e for e in errs]
    return {"shapes": len(pct), "rms_pct": math.sqrt(sum(e * e for e in pct) / len(pct)),
            "max_pct": max(abs(e) for e in pct), "mean_pct": sum(pct) / len(pct)}


def main(argv: list[str]) -> int:
    table = measured()
    eff = stored_efficiency()
    gpu = default_catalog().gpu("h100")
    knees = {"calibrated": eff, "no knee": replace(eff, gemm_knee=0.0)}
    best = min(range(50, 1001, 10),
               key=lambda c: summary(errors(table, replace(eff, gemm_knee=float(c)), "dims >= 2048"))["rms_pct"])
    knees[f"best fit, dims >= 2048 ({best})"] = replace(eff, gemm_knee=float(best))
    result = {"calibrated_knee": eff.gemm_knee, "best_knee": best, "knees": {}}
    for name, e in knees.items():
        result["knees"][name] = {cls: summary(errors(table, e, cls)) for cls in CLASSES}

    def ratio(a, b, e=eff):
        return gemm_share(*a, gpu, "bf16", e) / gemm_share(*b, gpu, "bf16", e)

    # 2048 rows against 8192 (a batch of four 2048-row GEMMs has the tiles of one 8192-row GEMM).
    rows = {"measured": table[(1, 2048, 4096, 4096)] / table[(4, 2048, 4096, 4096)],
            "model": ratio((2048, 4096, 4096), (8192, 4096, 4096))}
    reduction = {"measured": table[(4, 4096, 4096, 2048)] / table[(4, 4096, 4096, 4096)],
                 "model": ratio((16384, 4096, 2048), (16384, 4096, 4096))}
    result["m2048_over_m8192_at_n_k_4096"] = rows
    result["k2048_over_k4096_at_m16384_n4096"] = reduction
    # The level: the model's share of the reference shape against the measured one.
    result["in_step_over_isolated_at_4096"] = (gemm_share(*REFERENCE[1:], gpu, "bf16", eff)
                                               / (table[REFERENCE] / gpu.peak_flops("bf16")))
    if "--json" in argv:
        print(json.dumps(result, indent=2))
        return 0
    print(f"model knee (calibrated on published step times): {eff.gemm_knee:.1f} elements")
    print(f"{'knee':34s} {'class':12s} {'shapes':>6s} {'rms':>7s} {'max':>7s} {'mean':>7s}")
    for name, classes in result["knees"].items():
        for cls, s in classes.items():
            print(f"{name:34s} {cls:12s} {s['shapes']:6d} {s['rms_pct']:6.1f}% {s['max_pct']:6.1f}% {s['mean_pct']:+6.1f}%")
    for label, r in (("2048 rows / 8192 rows (n = k = 4096)", rows),
                     ("reduction 2048 / 4096 (m = 16384, n = 4096)", reduction)):
        print(f"{label:46s} measured {r['measured']:.3f}  model {r['model']:.3f}")
    print(f"4096^3: the model's share of peak is {result['in_step_over_isolated_at_4096']:.2f} of the measured "
          f"one (a GEMM inside a training step against one alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
