"""A second, milder cross-validation of the step-time calibration: leave one published table
(workload, size, dtype, GPU type) out at a time, refit on the rest, predict the held-out
table. This answers "how well does llmb predict a new size or precision of a workload whose
framework it has seen", next to the stored leave-one-workload-out numbers (`llmb calibrate`).

Takes a couple of minutes (one fit per table). Run: .venv/bin/python benchmarks/predict_cv_by_table.py
"""

from __future__ import annotations

import sys
from statistics import median

from llmb.catalog import default_catalog
from llmb.plan import calibrate as cal


def main() -> int:
    items = cal.samples(default_catalog())
    errors: dict[str, list[float]] = {}
    for table in sorted({s.table for s in items}):
        train = [s for s in items if s.table != table]
        eff, _ = cal.fit(train)
        for s in items:
            if s.table == table:
                err = 100 * (cal.predict_sample(s, eff) / s.measured_step_s - 1)
                for fam in s.families():
                    errors.setdefault(fam, []).append(err)
        print(f"held out {' '.join(table):40s} done", file=sys.stderr)
    print(f"{'family':8s} {'n':>3s} {'MAPE':>6s} {'median':>7s} {'max':>6s} {'bias':>6s}")
    for fam in cal.FAMILIES:
        errs = errors.get(fam)
        if not errs:
            continue
        a = [abs(e) for e in errs]
        print(f"{fam:8s} {len(a):3d} {sum(a) / len(a):6.1f} {median(a):7.1f} {max(a):6.1f} {sum(errs) / len(errs):+6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
