"""The step-time model's GEMM size knee against measured GEMMs. XLA's matmul interpolator ships
a table of measured GEMM throughput (``tests/data/xla_matmul.csv``: 375 shapes up to 4096 per
dimension, on Hopper in BF16 and on Blackwell in BF16 and FP8); the calibrated model prices one
dense GEMM at ``gemm_share`` of peak. The knee was fitted on published step times alone, so the
table is an independent check of it; its scaling with the peak is held at what this table
says (``knee_exponent`` 1).

Compared are shares relative to 4096^3: the model's ceiling is what a GEMM reaches inside a
training step, which an isolated measurement does not include (the two levels are printed on
their own). A batched GEMM counts as one of ``b m`` rows. Per GPU and dtype it prints the rms,
max and mean log error of the model's shape factor in three classes of shapes, the same with
no knee, the knee that fits each class best against the model's knee there, and the scaling
exponent the best knees imply against the model's ``knee_exponent``; last, the two comparisons
that bear on Grok-1's expert GEMMs (H100, BF16): 2048 against 8192 rows, and a 2048-long
against a 4096-long reduction.

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
from llmb.plan.predict import Efficiency, _gemm_knee, _hw_of, gemm_share

TABLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "xla_matmul.csv"
REFERENCE = (1, 4096, 4096, 4096)
#: The table's GPU keys as the hardware table's GPUs (sm_100: HGX B200, whose peaks are 2250 /
#: 4500 TFLOP/s; a GB200's would be 2450 / 4900, which moves only the implied exponent).
GPUS = {"sm_90": "h100", "sm_100": "b200"}
CLASSES = {
    "dims >= 2048": lambda b, m, n, k: min(m, n, k) >= 2048,
    "training": lambda b, m, n, k: b * m >= 4096 and m >= 1024 and min(n, k) >= 1024,
    "dims >= 1024": lambda b, m, n, k: min(m, n, k) >= 1024,
}
KNEES = range(20, 3001, 5)


def measured() -> dict[tuple[str, str], dict[tuple[int, int, int, int], float]]:
    """(gpu, dtype) -> (b, m, n, k) -> measured FLOP/s."""
    out: dict[tuple[str, str], dict] = {}
    with TABLE.open() as f:
        for r in csv.DictReader(f):
            key = tuple(int(r[c]) for c in "bmnk")
            out.setdefault((GPUS[r["sm"]], r["dtype"]), {})[key] = float(r["flops_per_s"])
    return out


def errors(table: dict, gpu_type: str, dtype: str, eff: Efficiency, cls: str) -> list[float]:
    """Log errors (model over measured) of each shape's share relative to the reference shape."""
    gpu = default_catalog().gpu(gpu_type)

    def share(b, m, n, k):
        return gemm_share(b * m, n, k, gpu, dtype, eff)

    ref_model, ref_measured = share(*REFERENCE), table[REFERENCE]
    return [math.log((share(*key) / ref_model) / (v / ref_measured))
            for key, v in table.items() if CLASSES[cls](*key)]


def summary(errs: list[float]) -> dict[str, float]:
    pct = [100 * e for e in errs]
    return {"shapes": len(pct), "rms_pct": math.sqrt(sum(e * e for e in pct) / len(pct)),
            "max_pct": max(abs(e) for e in pct), "mean_pct": sum(pct) / len(pct)}


def model_knee(gpu_type: str, dtype: str, eff: Efficiency) -> float:
    """The model's knee (elements) on that GPU and dtype."""
    return _gemm_knee(eff, _hw_of(default_catalog().gpu(gpu_type), dtype))


def best_knee(table: dict, gpu_type: str, dtype: str, cls: str) -> float:
    """The knee, in elements on that GPU and dtype, that fits the class's measured shapes best."""
    def rms(knee: float) -> float:
        # A knee exponent of 0 makes the knee the same number of elements on every GPU.
        eff = replace(Efficiency(), gemm_knee=float(knee), knee_exponent=0.0)
        return summary(errors(table, gpu_type, dtype, eff, cls))["rms_pct"]
    return float(min(KNEES, key=rms))


def implied_exponent(tables: dict, dtype: str, cls: str) -> float:
    """The knee exponent the best knees imply: B200's in ``dtype`` against H100's BF16."""
    cat = default_catalog()
    ratio = cat.gpu("b200").peak_flops(dtype) / cat.gpu("h100").peak_flops("bf16")
    knees = best_knee(tables["b200", dtype], "b200", dtype, cls), best_knee(tables["h100", "bf16"], "h100", "bf16", cls)
    return math.log(knees[0] / knees[1]) / math.log(ratio)


def report(eff: Efficiency) -> dict:
    tables = measured()
    cat = default_catalog()
    out: dict = {"knee_exponent": eff.knee_exponent, "gpus": {}}
    for (gpu_type, dtype), table in sorted(tables.items()):
        row: dict = {"model_knee": model_knee(gpu_type, dtype, eff)}
        for name, e in (("calibrated", eff), ("no knee", replace(eff, gemm_knee=0.0))):
            row[name] = {cls: summary(errors(table, gpu_type, dtype, e, cls)) for cls in CLASSES}
        row["best_knee"] = {cls: best_knee(table, gpu_type, dtype, cls) for cls in CLASSES}
        gpu = cat.gpu(gpu_type)
        row["measured_share_at_4096"] = table[REFERENCE] / gpu.peak_flops(dtype)
        row["model_share_at_4096"] = gemm_share(*REFERENCE[1:], gpu, dtype, eff)
        out["gpus"][f"{gpu_type} {dtype}"] = row
    out["implied_exponent"] = {f"{dtype} {cls}": implied_exponent(tables, dtype, cls)
                               for dtype in ("bf16", "fp8") for cls in ("dims >= 2048", "training")}
    h100, gpu = tables["h100", "bf16"], cat.gpu("h100")

    def ratio(a, b):
        return gemm_share(*a, gpu, "bf16", eff) / gemm_share(*b, gpu, "bf16", eff)

    # A batch of four 2048-row GEMMs has the tiles of one 8192-row GEMM.
    out["grok"] = {
        "2048 rows / 8192 rows (n = k = 4096)": {
            "measured": h100[1, 2048, 4096, 4096] / h100[4, 2048, 4096, 4096],
            "model": ratio((2048, 4096, 4096), (8192, 4096, 4096))},
        "reduction 2048 / 4096 (m = 16384, n = 4096)": {
            "measured": h100[4, 4096, 4096, 2048] / h100[4, 4096, 4096, 4096],
            "model": ratio((16384, 4096, 2048), (16384, 4096, 4096))},
    }
    return out


def main(argv: list[str]) -> int:
    eff = stored_efficiency()
    result = report(eff)
    if "--json" in argv:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'GPU dtype':12s} {'knee':10s} {'class':12s} {'shapes':>6s} {'rms':>7s} {'max':>7s} {'mean':>7s}"
          f" {'best knee':>9s} {'model knee':>10s}")
    for name, row in result["gpus"].items():
        for model in ("calibrated", "no knee"):
            for cls, s in row[model].items():
                tail = f" {row['best_knee'][cls]:9.0f} {row['model_knee']:10.0f}" if model == "calibrated" else ""
                print(f"{name:12s} {model:10s} {cls:12s} {s['shapes']:6d} {s['rms_pct']:6.1f}% {s['max_pct']:6.1f}%"
                      f" {s['mean_pct']:+6.1f}%{tail}")
        print(f"{name:12s} 4096^3: measured {row['measured_share_at_4096']:.3f} of peak, "
              f"model (inside a step) {row['model_share_at_4096']:.3f}")
    print(f"knee exponent: model {result['knee_exponent']:.3f}; implied by the best knees (B200 against "
          "H100 BF16): " + ", ".join(f"{k} {v:.2f}" for k, v in result["implied_exponent"].items()))
    for label, r in result["grok"].items():
        print(f"H100 BF16 {label:44s} measured {r['measured']:.3f}  model {r['model']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
