"""Is the FP8 + TP residual a TP-communication mechanism? Fit the step-time model twice on the
whole catalog - with Transformer Engine's FP8 all-gathers (1 byte per element, the model's
assumption) and with BF16 all-gathers (2 bytes) - and print the loss and the mean error of
every FP8 table, with its TP size. A TP mechanism would shrink the FP8 errors in proportion
to the TP traffic (TP8 405B most, TP1 8B not at all).

Takes about 20 s. Run: .venv/bin/python benchmarks/predict_fp8_tp.py
"""

from __future__ import annotations

import sys

from llmb.catalog import default_catalog
from llmb.plan import calibrate as cal
from llmb.plan import predict


def _fit(share: float, items):
    predict.FP8_TP_GATHER_SHARE = share
    predict._layer_cost_cached.cache_clear()
    eff, loss = cal.fit(items)
    per: dict[tuple, list[float]] = {}
    for s in items:
        if s.dtype == "fp8":
            per.setdefault(s.table[:4] + (s.recipe.layout.tp,), []).append(cal.predict_sample(s, eff) / s.measured_step_s - 1)
    return loss, per


def main() -> int:
    items = cal.samples(default_catalog())
    results = {share: _fit(share, items) for share in (0.5, 1.0)}
    predict.FP8_TP_GATHER_SHARE = 0.5
    predict._layer_cost_cached.cache_clear()
    print(f"{'FP8 table':40s} {'TP':>3s} {'FP8 gathers':>12s} {'BF16 gathers':>13s}")
    for key in results[0.5][1]:
        cells = [100 * sum(v) / len(v) for v in (results[0.5][1][key], results[1.0][1][key])]
        print(f"{' '.join(key[:4]):40s} {key[4]:3d} {cells[0]:+11.1f}% {cells[1]:+12.1f}%")
    print(f"{'fit loss (mean squared log error)':44s} {results[0.5][0]:11.5f} {results[1.0][0]:13.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
