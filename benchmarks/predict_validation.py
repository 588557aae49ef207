"""Held-out validation of the step-time model, by family, as Markdown (the README's table).

Two schemes, each row predicted by a fit that never saw its group: leave one workload out and
leave one GPU type out (``llmb.plan.calibrate.cross_validate``). Per family (all, dense/MoE,
BF16/FP8, H100/GB200, NeMo 1/NeMo 2/Megatron-LM/MaxText): rows, median and max absolute error,
bias, and band coverage (the share of held-out rows inside the stored calibration's band for
their family). Also lists the rows beyond 10 %. Refits from scratch: a few minutes.

``--fix NAME=VALUE`` (repeatable) holds a fitted parameter at a value in every fold, and
prints the in-sample loss of the fit on all rows first: how the README's "fixed at" numbers
were made (e.g. ``--fix gemm_knee=190``, the knee of measured H100 GEMMs).

Run: .venv/bin/python benchmarks/predict_validation.py [--fix NAME=VALUE ...]
"""

from __future__ import annotations

import sys

from llmb.catalog import default_catalog
from llmb.errors import LlmbError
from llmb.plan import calibrate as cal

TARGET_MEDIAN, TARGET_MAX = 3.0, 10.0


def _fixed(argv: list[str]) -> dict[str, float]:
    fixed = {}
    for i, arg in enumerate(argv):
        if arg != "--fix":
            continue
        name, _, value = (argv[i + 1] if i + 1 < len(argv) else "").partition("=")
        try:
            fixed[name] = float(value)
        except ValueError:
            raise SystemExit("--fix takes NAME=VALUE, e.g. --fix gemm_knee=190") from None
    return fixed


def main(argv: list[str]) -> int:
    fixed = _fixed(argv)
    items = cal.samples(default_catalog())
    bands = cal.stored_calibration().bands
    if fixed:
        try:
            eff, loss = cal.fit(items, fixed=fixed)
        except LlmbError as exc:  # an unknown parameter name
            raise SystemExit(str(exc)) from None
        print(f"fixed {fixed}: in-sample loss {loss:.5f}; " + ", ".join(f"{k} {v:.4g}" for k, v in eff.as_dict().items()))
    for scheme in ("leave one workload out", "leave one GPU type out"):
        held = cal.cross_validate(items, lambda m: print(m, file=sys.stderr), scheme, fixed)
        summary = cal.summarize(held, bands)
        print(f"\n{scheme} ({len(held)} rows; targets: median <= {TARGET_MEDIAN:g} %, max <= {TARGET_MAX:g} %)\n")
        print("| family | rows | median abs error % | max abs error % | bias % | in band | meets targets |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for fam, by_model in summary.items():
            c = by_model["calibrated"]
            ok = c["median"] <= TARGET_MEDIAN and c["max"] <= TARGET_MAX
            print(f"| {fam} | {c['n']} | {c['median']:.1f} | {c['max']:.1f} | {c['bias']:+.1f} | "
                  f"{c['coverage']:.0f}% | {'yes' if ok else 'no'} |")
        worst = sorted((h for h in held if abs(h.error('calibrated')) > TARGET_MAX / 100),
                       key=lambda h: -abs(h.error("calibrated")))
        if worst:
            print(f"\n{len(worst)} rows beyond 10 %; the worst: "
                  + "; ".join(f"{h.sample.label} {100 * h.error('calibrated'):+.1f}%" for h in worst[:8]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
