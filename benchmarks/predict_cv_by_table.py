"""Leave-one-TABLE-out cross-validation of the step-time calibration, next to the two naive
baselines: each published table (workload, size, dtype, GPU type) is held out in turn, the
parameters are refitted on the rest, and the held-out table is predicted. This answers "how
well does llmb predict a new size or precision of a workload whose framework it has seen";
the headline (harder) leave-one-workload-out numbers are in ``llmb calibrate``. Both are
stored in calibration.json by ``llmb calibrate --fit --write``.

Takes a few minutes (one fit per table). Run: .venv/bin/python benchmarks/predict_cv_by_table.py
"""

from __future__ import annotations

import sys

from llmb.catalog import default_catalog
from llmb.plan import calibrate as cal


def main() -> int:
    items = cal.samples(default_catalog())
    held = cal.cross_validate(items, lambda m: print(m, file=sys.stderr), "leave one table out")
    print(f"{'family':8s} {'n':>3s} {'model':13s} {'MAPE':>6s} {'median':>7s} {'max':>6s} {'bias':>6s}")
    for fam, by_model in cal.summarize(held).items():
        for model, s in by_model.items():
            print(f"{fam:8s} {s['n']:3d} {model:13s} {s['mape']:6.1f} {s['median']:7.1f} {s['max']:6.1f} {s['bias']:+6.1f}")
    per: dict[str, list[float]] = {}
    for h in held:
        per.setdefault(h.sample.workload, []).append(100 * h.error("calibrated"))
    for wl, errs in per.items():
        print(f"held-out {wl:16s} MAPE {sum(map(abs, errs)) / len(errs):5.1f}  bias {sum(errs) / len(errs):+5.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
