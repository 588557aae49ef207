"""Window statistics and run status: pure functions."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmb.errors import LlmbError
from llmb.results import Status, Window, default_window, parse_file, parse_window, window_stats
from llmb.results.record import StepRecord
from llmb.results.stats import summarize

LOGS = Path(__file__).parent / "fixtures" / "logs"


def recs(times, start=0, **kw):
    return [StepRecord(iteration=start + i, raw_line_no=i + 1, step_time_s=t, **kw) for i, t in enumerate(times)]


def test_default_window_is_the_reference_and_scales_with_length():
    assert default_window() == Window(11, 44)
    assert default_window(50) == Window(11, 44)
    assert default_window(10) == Window(3, 8)
    assert default_window(100) == Window(22, 88)
    assert default_window(1) == Window(1, 1)


def test_parse_window_and_bad_windows():
    assert parse_window("35:44") == Window(35, 44)
    for bad in ("35", "a:b", "44:35", "-1:3", ""):
        with pytest.raises(LlmbError):
            parse_window(bad)


def test_summary_uses_sample_std():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s.mean == 2.5 and s.median == 2.5 and (s.min, s.max, s.count) == (1.0, 4.0, 4)
    assert s.std == pytest.approx(statistics.stdev([1, 2, 3, 4]))  # ddof=1: 1.29, not 1.118
    assert s.std != pytest.approx(statistics.pstdev([1, 2, 3, 4]))
    assert summarize([5.0]).std is None
    assert summarize([]) is None


def test_ok_window_excludes_warmup_and_tail():
    times = [100.0] * 11 + [2.0] * 34 + [50.0] * 5
    ws = window_stats(recs(times), Window(11, 44), final_reached=True)
    assert ws.status is Status.OK and ws.present == 34
    st_ = ws.metrics["step_time_s"]
    assert (st_.mean, st_.min, st_.max, st_.count) == (2.0, 2.0, 2.0, 34)


def test_no_data():
    ws = window_stats([], Window(11, 44))
    assert ws.status is Status.NO_DATA and ws.metrics == {}


def test_incomplete_when_window_has_holes_or_run_stopped():
    times = [1.0] * 50
    holes = [r for r in recs(times) if r.iteration != 20]
    ws = window_stats(holes, Window(11, 44), final_reached=True)
    assert ws.status is Status.INCOMPLETE and "20" in ws.reasons[0]
    assert ws.metrics["step_time_s"].count == 33
    ws = window_stats(recs(times), Window(11, 44), final_reached=False)
    assert ws.status is Status.INCOMPLETE
    # format that does not print progress: only the window counts
    assert window_stats(recs(times), Window(11, 44), final_reached=None).status is Status.OK


def test_invalid_on_nan_loss_anywhere_or_bad_step_time_in_window():
    rs = recs([1.0] * 50)
    rs[47] = StepRecord(iteration=47, raw_line_no=48, step_time_s=1.0, loss=math.nan)
    assert window_stats(rs, Window(11, 44), True).status is Status.INVALID
    rs = recs([1.0] * 50)
    rs[30] = StepRecord(iteration=30, raw_line_no=31, step_time_s=1.0, grad_norm=math.inf)
    assert window_stats(rs, Window(11, 44), True).status is Status.INVALID
    rs = recs([1.0] * 9 + [-12.71] + [1.0] * 40)  # NeMo's negative timing, outside the window: fine
    assert window_stats(rs, Window(11, 44), True).status is Status.OK
    assert window_stats(rs, Window(5, 44), True).status is Status.INVALID
    # invalid beats incomplete
    assert window_stats(rs[:20], Window(5, 44), False).status is Status.INVALID


def test_status_of_fixtures_end_to_end():
    def status(name):
        p = parse_file(LOGS / name)
        return window_stats(p.records, default_window(p.planned_steps), p.final_reached)

    assert status("nemo2_llama31_8b_bf16.log").status is Status.OK
    assert status("nemo2_nan_loss.log").status is Status.INVALID
    killed = status("nemo2_killed.log")
    assert killed.status is Status.INCOMPLETE and killed.present == 20  # 11..30 of 11..44
    llmb = status("llmb_small.log")
    assert llmb.window == Window(3, 8) and llmb.status is Status.OK


@given(st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=2, max_size=60))
def test_summary_properties(values):
    s = summarize(values)
    assert s.min <= s.median <= s.max
    assert s.min - 1e-9 <= s.mean <= s.max + 1e-9
    assert s.std >= 0 and s.count == len(values)


def test_outliers_are_listed_not_dropped():
    times = [1.0] * 20 + [0.002] + [1.0] * 29  # an async-dispatch artefact at 20
    ws = window_stats(recs(times), Window(11, 44), True)
    assert ws.outliers == (20,) and ws.status is Status.OK
    assert ws.metrics["step_time_s"].count == 34 and ws.metrics["step_time_s"].min == 0.002


def test_results_and_report_never_import_torch():
    import subprocess
    import sys

    code = "import sys, llmb.results, llmb.report, llmb.cli.results_cmds; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_log_interval_sets_which_iterations_the_window_expects():
    rs = [StepRecord(iteration=i, raw_line_no=i, step_time_s=2.0) for i in range(10, 51, 10)]  # --log-interval 10
    ws = window_stats(rs, Window(11, 44), True)
    assert ws.interval == 10 and ws.expected == 3 and ws.present == 3 and ws.status is Status.OK
    holes = [r for r in rs if r.iteration != 30]
    ws = window_stats(holes, Window(11, 44), True)
    assert ws.status is Status.INCOMPLETE and "30" in ws.reasons[0]
    ws = window_stats(rs, Window(11, 15), True)
    assert ws.status is Status.INCOMPLETE and "no logged iteration" in ws.reasons[0]


def test_logs_that_are_not_the_recipes_run_get_the_steps_after_warm_up():
    """An excerpt, a long run logged from iteration 15107, a log every 10 steps, one step: the
    window is the logged steps after warm-up, so statistics exist whenever a step was read."""
    from llmb.results.stats import observed_window

    def recs(pairs):
        return [StepRecord(iteration=i, raw_line_no=n, step_time_s=t) for n, (i, t) in enumerate(pairs, 1)]

    # MaxText resumed at 15107: the first 10 % (2 of 20) go, then nothing else is an outlier
    long_run = recs([(15107 + k, 5.0 + 0.01 * k) for k in range(20)])
    assert observed_window(long_run) == Window(15109, 15126)
    # compilation and an asynchronous-dispatch artefact at the start go too (3x from the median)
    maxtext = recs([(0, 44.9), (1, 0.319), (2, 5.66), (3, 5.40), (4, 5.67), (5, 5.67), (6, 5.67)])
    assert observed_window(maxtext) == Window(2, 6)
    # Megatron every 10 steps at iteration 122 of 250000: its 10, 20, ..., 120
    sparse = recs([(k, 2.0) for k in range(10, 130, 10)])
    w = observed_window(sparse)
    assert w == Window(30, 120)
    ws = window_stats(sparse, w, final_reached=False)
    assert ws.present == ws.expected == 10 and ws.metrics["step_time_s"].count == 10
    assert ws.status is Status.INCOMPLETE  # honest: the run did not reach its planned end
    assert observed_window(recs([(10, 4.65)])) == Window(10, 10)
    assert observed_window([]) is None


def test_parse_gives_statistics_for_an_excerpt(tmp_path):
    from llmb.results.analysis import analyze_logs
    from llmb.results.identity import RunSpec

    lines = [f" [2026-01-27 10:49:15] iteration {it:>8d}/  250000 | elapsed time per iteration (ms): 2000.0 | "
             f"lm loss: 1.0E+00 | grad norm: 1.0 |" for it in range(10, 130, 10)]
    log = tmp_path / "megatron.log"
    log.write_text("\n".join(lines) + "\n")
    (res,) = analyze_logs([str(log)], spec=RunSpec())
    assert str(res.stats.window) == "30:120" and res.stats.metrics["step_time_s"].mean == 2.0
    assert any("after warm-up" in n for n in res.notes)
