"""Calibration: the stored parameters are reproducible and up to date, and they predict."""

import math
from statistics import median

import pytest

from llmb.catalog import default_catalog
from llmb.plan import calibrate as cal

CAT = default_catalog()


@pytest.fixture(scope="module")
def items():
    return cal.samples(CAT)


def test_every_baseline_with_a_step_time_is_a_sample(items):
    assert len(items) == len(CAT.baselines())
    megatron_8b = next(s for s in items if s.workload == "megatron-llama3" and s.size == "8b")
    # 8192 tokens x GBS 128 / (13812 tokens/s/GPU x 8 GPUs) = 9.4896 s.
    assert megatron_8b.measured_step_s == pytest.approx(8192 * 128 / (13812 * 8))


def test_each_published_table_weighs_one(items):
    w = cal._weights(items)
    tables = {s.table for s in items}
    assert sum(w) == pytest.approx(len(tables))


def test_stored_calibration_matches_the_catalog(items):
    stored = cal.stored_calibration()
    # A catalog change (rows, layouts, step times) needs `llmb calibrate --fit --write`.
    assert stored.fingerprint == cal.fingerprint(items)
    assert len(stored.rows) == len(items)


def test_refit_reproduces_the_stored_parameters(items):
    eff, loss = cal.fit(items)
    stored = cal.stored_calibration()
    assert eff == stored.efficiency
    assert loss == pytest.approx(stored.loss, rel=1e-9)


def test_a_fixed_parameter_stays_where_it_is_put_and_the_rest_refit(items):
    """``fit(fixed=...)`` holds a parameter at a given value (a measured one in place of a
    fitted one) and fits the others around it; an unknown name is one readable error."""
    few = [s for s in items if s.workload == "llama3.1" and s.gpu_type == "h100"][:8]
    free, free_loss = cal.fit(few)
    held, held_loss = cal.fit(few, fixed={"hbm": 0.2, "gemm_knee": 50.0})
    assert (held.hbm, held.gemm_knee) == (0.2, 50.0) != (free.hbm, free.gemm_knee)
    assert held.gemm_bf16 != free.gemm_bf16  # the others moved to make up for it
    assert held_loss >= free_loss
    with pytest.raises(cal.LlmbError, match="not a fitted parameter: knee"):
        cal.fit(few, fixed={"knee": 1.0})


def test_fitted_model_beats_its_start_and_the_naive_baselines(items):
    stored = cal.stored_calibration()
    assert cal.loss(items, stored.efficiency) < cal.loss(items, cal.FIT_START)
    assert cal.loss(items, stored.efficiency) < cal.loss(items, cal.Efficiency.roofline())
    errs = [abs(cal.predict_sample(s, stored.efficiency) / s.measured_step_s - 1) for s in items]
    assert median(errs) < 0.05
    cv = stored.cv["all"]
    assert cv["calibrated"]["mape"] < cv["constant_mfu"]["mape"]
    assert cv["calibrated"]["mape"] < cv["roofline"]["mape"]


def test_constant_mfu_baseline_reproduces_its_own_mfu(items):
    s = items[0]
    m = cal.achieved_mfu(s)
    assert cal.predict_constant_mfu(s, m) == pytest.approx(s.measured_step_s)


def test_calibration_json_round_trip():
    stored = cal.stored_calibration()
    again = cal.from_json(cal.to_json(stored))
    assert again.efficiency == stored.efficiency
    assert again.bands == {k: tuple(v) for k, v in stored.bands.items()}
    lo, hi = stored.band(moe=False)
    assert lo < 0 < hi and math.isfinite(lo)


def test_prior_is_centered_on_the_fit_start():
    # The fit starts from the prior's centers; the prior is weak next to the data.
    for name, (center, sd) in cal.PRIOR.items():
        assert getattr(cal.FIT_START, name) == center and sd > 0
    assert cal.prior_penalty(cal.FIT_START, 19) == 0.0
    off = cal.Efficiency.from_dict({**cal.FIT_START.as_dict(), "attention": cal.FIT_START.attention * math.exp(0.25)})
    # One standard deviation off costs one table's typical squared error spread over the tables.
    assert cal.prior_penalty(off, 19) == pytest.approx(cal.TABLE_NOISE**2 / 19)


def test_samples_use_the_stated_recompute(items):
    by_label = {s.label: s for s in items}
    assert by_label["llama2-maxtext 70b bf16 512xh100"].recompute == "save_qkv"
    assert by_label["llama3.1 8b fp8 8xh100"].recompute == "none"


def test_stored_calibration_holds_every_cross_validation():
    stored = cal.stored_calibration()
    for cv in (stored.cv, stored.cv_table, stored.cv_gpu):
        assert set(cv) >= {"all", "dense", "moe", "bf16", "fp8", "h100", "gb200", "nemo1", "nemo2"}
        assert set(cv["all"]) == set(cal.MODELS)
        assert cv["all"]["calibrated"]["n"] == len(stored.rows)
        assert 0 <= cv["all"]["calibrated"]["coverage"] <= 100
    # Holding out one table is milder than holding out a whole workload where a workload's own
    # tables agree (dense). Not for MoE: Grok-1's NeMo 2 tables run the same layout 10-20 %
    # faster than its NeMo 1 tables, so a held-out NeMo 1 table is predicted from a fit that the
    # other releases pulled toward them (README, "What the held-out numbers say").
    assert stored.cv_table["dense"]["calibrated"]["mape"] <= stored.cv["dense"]["calibrated"]["mape"]
    assert all("held_out_table_calibrated_s" in row and "held_out_gpu_type_calibrated_s" in row for row in stored.rows)


def test_samples_name_release_and_framework(items):
    grok512 = [s for s in items if s.workload == "grok1" and s.gpus == 512 and s.dtype == "bf16" and s.gpu_type == "h100"]
    assert sorted(s.release for s in grok512) == ["24.11.1", "25.02", "25.05.01", "25.05.02"]
    assert {s.framework for s in grok512} == {"nemo1", "nemo2"}
    assert len({s.label for s in items}) == len(items)  # the release tells repeated configurations apart
    assert len({s.table for s in grok512}) == 4  # each release's table weighs one
    gb = next(s for s in items if s.gpu_type == "gb200" and s.workload == "llama3.1")
    assert gb.families() == ("all", "dense", gb.dtype, "gb200", "nemo2")


def test_coverage_counts_rows_inside_the_band(items):
    s = items[0]
    bands = {"dense": (-0.05, 0.05), "moe": (-0.05, 0.05)}
    inside = cal.HeldOut(s, s.measured_step_s * 1.04, 1.0, 1.0)
    outside = cal.HeldOut(s, s.measured_step_s * 1.06, 1.0, 1.0)
    assert cal.in_band(inside, bands) and not cal.in_band(outside, bands)
    assert cal.summarize([inside, outside], bands)["all"]["calibrated"]["coverage"] == 50.0


def test_gpu_type_scheme_holds_out_every_row_of_a_gpu_type():
    assert cal.SCHEMES["leave one GPU type out"](cal.samples(CAT)[0]) in ("h100", "gb200")
