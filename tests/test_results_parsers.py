"""Every log format on its fixture, the real-log excerpts' MANIFEST, and arbitrary bytes."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmb.errors import LlmbError
from llmb.logline import format_step_line
from llmb.results.parse import LogStream, detect_line, parse_file, parse_stream
from llmb.results.parsers import FORMATS, PARSERS
from llmb.results.reader import ScanState, clean, scan
import re

LOGS = Path(__file__).parent / "fixtures" / "logs"
# The shared real-log excerpts live beside the checkout (../shared/real-logs), where they exist.
REAL = Path(__file__).resolve().parents[2] / "shared" / "real-logs"


def parse_bytes(data: bytes, fmt: str | None = None, rank: int | None = None):
    return parse_stream(io.BytesIO(data), fmt=fmt, rank=rank)


# ---------------------------------------------------------------- per-format fixtures

def test_nemo2_fixture():
    p = parse_file(LOGS / "nemo2_llama31_8b_bf16.log")
    assert p.format == "nemo2" and p.iteration_base == 0
    assert [r.iteration for r in p.records] == list(range(50))
    last = p.records[-1]
    assert last.raw_line_no == 60  # counted like grep -n
    assert last.mem_bytes == 70833405952 + 49 * 4096
    assert last.tflops_per_gpu is not None and 300 < last.tflops_per_gpu < 700  # "6.123e+02"
    assert p.progress == (50, 50) and p.final_reached
    # the head-only line before timing is reported, not turned into a step
    assert p.malformed == 1 and "line 9" in p.notes[0]


def test_nemo1_tqdm_carriage_returns_and_glued_lines():
    p = parse_file(LOGS / "nemo1_tqdm.log")
    assert p.format == "nemo1"
    assert [r.iteration for r in p.records] == list(range(50))  # global_step as printed, 0..49
    assert {r.raw_line_no for r in p.records} == {3}  # all updates on one physical line
    assert p.progress == (50, 50)
    assert p.duplicates == 1  # the refreshed step 24 counts once
    assert p.records[0].step_time_s == pytest.approx(32.31)


def test_megatron_fixture():
    p = parse_file(LOGS / "megatron_llama3_fp8.log")
    assert p.format == "megatron" and p.iteration_base == 1
    assert [r.iteration for r in p.records] == list(range(1, 51))
    r10 = p.records[9]
    assert r10.step_time_s is not None and 9.0 < r10.step_time_s < 9.7  # ms -> s
    assert r10.tflops_per_gpu is not None and r10.grad_norm == pytest.approx(3.1)
    assert r10.loss == pytest.approx(10.5 - 0.3)


def test_mbridge_pairs_step_time_lines_by_position():
    p = parse_file(LOGS / "mbridge_llama3_8b.log")
    assert p.format == "mbridge"
    # the last 'Step Time' line's iteration line was cut off: the step still counts, numbered
    # on from the last iteration line (21, as the cut line itself says), and a note says so
    assert [r.iteration for r in p.records] == list(range(1, 22))
    # step time from the 'Step Time' line (2 decimals), not Megatron's ms (which is 3.3 ms more)
    text = (LOGS / "mbridge_llama3_8b.log").read_text()
    times = [float(x) for x in re.findall(r"Step Time : ([\d.]+)s", text)]
    assert [r.step_time_s for r in p.records] == times
    assert p.records[0].tflops_per_gpu == 59892.5  # old spelling, kept as logged
    assert p.records[5].tflops_per_gpu is not None and p.records[5].tflops_per_gpu < 1000
    assert p.records[-1].loss is None  # nothing of the cut iteration line is invented
    assert any("had no iteration line" in n for n in p.notes)


def test_mbridge_step_time_lines_without_iteration_lines_count_in_order():
    data = (b"Step Time : 7.04s GPU utilization: 650.0MODEL_TFLOP/s/GPU\n"
            b"Step Time : 7.01s\n"
            b"Step Time : 7.02s GPU utilization: 651.0MODEL_TFLOP/s/GPU\n")
    p = parse_bytes(data)
    assert p.format == "mbridge"
    assert [(r.iteration, r.step_time_s, r.tflops_per_gpu) for r in p.records] == [
        (1, 7.04, 650.0), (2, 7.01, None), (3, 7.02, 651.0)]


def test_megatron_line_alone_is_megatron_not_mbridge():
    line = (" [2026-01-27 10:49:15] iteration       10/    1000 | consumed samples:         5120 | elapsed time per "
            "iteration (ms): 1234.5 | throughput per GPU (TFLOP/s/GPU): 456.7 | learning rate: 1.500000E-04 | global "
            "batch size:   512 | lm loss: 9.876543E+00 | loss scale: 1.0 | grad norm: 3.210 | number of skipped "
            "iterations:   0 | number of nan iterations:   0 |\n")
    p = parse_bytes(line.encode())
    assert p.format == "megatron"
    (r,) = p.records
    assert (r.iteration, r.step_time_s, r.tflops_per_gpu, r.loss, r.grad_norm) == (10, 1.2345, 456.7, 9.876543, 3.21)
    assert p.progress == (10, 1000) and p.final_reached is False


def test_maxtext_fixture_absl_prefix_and_other_lines_ignored():
    p = parse_file(LOGS / "maxtext_llama2_70b.log")
    assert p.format == "maxtext"
    assert [r.iteration for r in p.records] == list(range(50))
    assert p.records[1].tflops_per_gpu > 1e5  # async-dispatch artefact, logged as is
    assert p.records[10].tokens_per_s_per_gpu is not None and p.records[10].tokens_per_s is None
    assert p.progress is None and p.final_reached is None


def test_torchtitan_keeps_rank0_of_interleaved_ansi_output():
    p = parse_file(LOGS / "torchtitan_llama3_8b.log")
    assert p.format == "torchtitan"
    assert p.rank == 0 and p.ranks == (0, 1)
    assert [r.iteration for r in p.records] == list(range(1, 31))
    first, second = p.records[0], p.records[1]
    assert first.mfu is None  # "mfu: N/A"
    assert first.loss == pytest.approx(8.0111 - 0.1)  # rank 0's, not rank 1's (+0.01)
    assert second.tokens_per_s_per_gpu is not None and second.tokens_per_s_per_gpu > 100_000  # "146,261"
    assert second.mem_bytes == pytest.approx(1.12 * 2**30)
    assert second.step_time_s is None
    p1 = parse_file(LOGS / "torchtitan_llama3_8b.log", rank=1)
    assert p1.rank == 1 and p1.records[0].loss == pytest.approx(8.0111 - 0.1 + 0.01)


def test_lowest_rank_is_kept_even_when_it_starts_logging_late():
    line = "[rank{r}]:step: {i}  loss: {loss}  tps: 1,000  tflops: 1.0  mfu: 1.00%\n"
    lines = [line.format(r=2, i=1, loss=2.0), line.format(r=1, i=1, loss=1.0), line.format(r=2, i=2, loss=2.0),
             line.format(r=1, i=2, loss=1.0)]
    p = parse_bytes("".join(lines).encode())
    assert p.rank == 1 and [r.loss for r in p.records] == [1.0, 1.0]


def test_srun_label_prefix_is_a_rank():
    text, rank = clean("3: Training epoch 0, iteration 1/9 | train_step_timing in s: 1.0")
    assert rank == 3 and text.startswith("Training")


def test_llmb_engine_lines_roundtrip_through_logline():
    p = parse_file(LOGS / "llmb_small.log")
    assert p.format == "llmb" and p.progress == (10, 10)
    assert [r.iteration for r in p.records] == list(range(1, 11))
    assert p.records[-1].mem_bytes == pytest.approx(1.234 * 2**30)
    line = format_step_line(7, 50, step_time_s=float("nan"), tokens_per_s=10.0, loss=float("inf"))
    (r,) = parse_bytes((line + "\n").encode()).records
    assert r.iteration == 7 and math.isnan(r.step_time_s) and r.loss == math.inf and r.tokens_per_s == 10.0


def test_malformed_lines_are_counted_and_skipped():
    p = parse_file(LOGS / "malformed_nemo2.log")
    assert p.format == "nemo2"
    assert [r.iteration for r in p.records] == [0, 2, 3, 4]
    assert p.records[1].loss == math.inf  # inf kept, statistics will call the run INVALID
    assert p.malformed == 2  # garbage value, truncated last line
    assert p.lines == 8


def test_real_log_quirks_in_miniature():
    # NeMo 2 negative step time, kept as logged
    p = parse_bytes(b"Training epoch 0, iteration 9/19 | global_step: 9 | reduced_train_loss: 10.84 | train_step_timing in s: -12.71\n")
    assert p.records[0].step_time_s == -12.71
    # NeMo 1: global_step=50.0 on the 50/50 line is the iteration as printed
    p = parse_bytes("Epoch 0: : 100%|\u2588\u2588| 50/50 [31:51<00:00, reduced_train_loss=6.130, global_step=50.0, "
                    "consumed_samples=76800.0, train_step_timing in s=5.900, val_loss=6.250]\n".encode())
    assert p.records[0].iteration == 50 and p.final_reached
    # Megatron-Bridge: Step Time line first, old spelling
    p = parse_bytes(b"Step Time : 4.65s GPU utilization: 59892.5TFLOP/s/GPU\nx\n [2025-10-06 03:27:07] iteration       "
                    b"10/      10 | consumed samples:         5120 | elapsed time per iteration (ms): 4647.8 | lm loss: 9.763827E+00 |\n")
    assert p.format == "mbridge" and p.records[0].step_time_s == 4.65 and p.records[0].iteration == 10


def test_detection_and_forced_format():
    assert detect_line("completed step: 3, seconds: 1.0, TFLOP/s/device: 1") == "maxtext"
    assert detect_line("Training epoch 0, iteration 3/9 | global_step: 3 | x") == "nemo2"
    assert detect_line("nothing to see") is None
    data = (LOGS / "maxtext_llama2_70b.log").read_bytes()
    assert parse_bytes(data, fmt="nemo2").records == ()  # forced wrong format finds nothing
    with pytest.raises(LlmbError, match="unknown log format"):
        parse_bytes(data, fmt="jax")


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(LlmbError, match="no such log file"):
        parse_file(tmp_path / "nope.log")
    with pytest.raises(LlmbError, match="is a folder"):
        parse_file(tmp_path)


def test_scan_counts_lines_across_chunk_boundaries(monkeypatch):
    import llmb.results.reader as reader

    monkeypatch.setattr(reader, "CHUNK_BYTES", 7)  # split lines and a 3-byte character
    data = "a\n\u2588 MARK one\nb\rc MARK two\r\nlast MARK".encode()
    state = ScanState(pattern=re.compile("MARK"))
    got = list(scan(io.BytesIO(data), state))
    assert got == [(2, "\u2588 MARK one"), (3, "c MARK two"), (4, "last MARK")]
    assert state.lines == 4 and state.bytes == len(data) and not state.ended_with_newline


# ---------------------------------------------------------------- the shared real-log excerpts

def _manifest():
    if not (REAL / "MANIFEST.tsv").exists():
        return []
    with open(REAL / "MANIFEST.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.mark.skipif(not REAL.exists(), reason="the shared real-log excerpts are not on this machine")
@pytest.mark.parametrize("row", _manifest(), ids=lambda r: r["file"])
def test_real_log_excerpts_match_manifest(row):
    p = parse_file(REAL / row["file"])
    assert p.format == row["format"]
    want_it = [int(x) for x in re.match(r"[\d,]+", row["iterations"]).group(0).split(",")]
    assert [r.iteration for r in p.records] == want_it
    want_t = [float(x) for x in row["step_time_s"].split(",")]
    assert [r.step_time_s for r in p.records] == pytest.approx(want_t)
    if row["tflops"] != "n/a":
        assert [r.tflops_per_gpu for r in p.records] == pytest.approx([float(x) for x in row["tflops"].split(",")])


# ---------------------------------------------------------------- arbitrary input never crashes

_STEP_BITS = st.sampled_from([
    b"Training epoch 0, iteration ", b"completed step: ", b"step: ", b"loss: ", b"Step Time : ", b"s GPU utilization: ",
    b"elapsed time per iteration (ms): ", b" iteration  ", b"llmb iteration ", b"train_step_timing in s=", b"global_step=",
    b"tps: ", b"|", b"/", b"nan", b"-inf", b"1e999", b"9" * 30, b"\r", b"\n", b"\x1b[31m", b"[rank0]:", b"0: ", b"\xff", b",",
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=40), _STEP_BITS), max_size=40), st.sampled_from([None, *FORMATS]))
def test_arbitrary_bytes_never_crash_a_parser(chunks, fmt):
    data = b"".join(chunks)
    p = parse_bytes(data, fmt=fmt)
    assert p.bytes == len(data)
    for r in p.records:
        assert isinstance(r.iteration, int) and r.raw_line_no >= 1


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_every_parser_survives_every_line(data):
    text = data.decode("utf-8", errors="replace")
    for cls in PARSERS.values():
        parser = cls()
        try:
            parser.feed(text, 1, None)
        except ValueError:
            pass  # the driver counts these as malformed
        parser.finish()
    list(LogStream(io.BytesIO(data)))


# ---------------------------------------------------------------- values survive each format

_VAL = st.floats(min_value=1e-4, max_value=1e5, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(it=st.integers(1, 10**6), t=_VAL, loss=st.one_of(_VAL, st.just(math.nan), st.just(math.inf)), tflops=_VAL)
def test_printed_values_come_back(it, t, loss, tflops):
    lines = {
        "nemo2": f"Training epoch 0, iteration {it}/{it} | global_step: {it} | reduced_train_loss: {loss:.6g} | "
                 f"train_step_timing in s: {t:.6g} | TFLOPS_per_GPU: {tflops:.6e}",
        "nemo1": f"Epoch 0: : 100%|##| {it}/{it} [00:01<00:00, reduced_train_loss={loss:.6g}, global_step={it}.00, "
                 f"train_step_timing in s={t:.6g}, TFLOPS_per_GPU={tflops:.6g}]",
        "megatron": f" [2026-01-27 10:49:15] iteration {it:>8d}/{it:>8d} | elapsed time per iteration (ms): {t * 1000:.6g} | "
                    f"throughput per GPU (TFLOP/s/GPU): {tflops:.6g} | lm loss: {loss:.6E} | grad norm: 1.0 |",
        "maxtext": f"completed step: {it}, seconds: {t:.6g}, TFLOP/s/device: {tflops:.6g}, Tokens/s/device: 1.0, loss: {loss:.6g}",
        "torchtitan": f"[rank0]:[titan] - root - INFO - \x1b[31mstep: {it:2d}  \x1b[32mloss: {loss:7.4f}  memory:  1.00GiB(1%)  "
                      f"tps: {round(tflops):,}  tflops: {tflops:,.2f}  mfu: N/A\x1b[39m",
        "llmb": format_step_line(it, it, step_time_s=t, loss=loss, tflops_per_device=tflops),
    }
    for fmt, line in lines.items():
        p = parse_bytes((line + "\n").encode())
        assert p.format == fmt, line
        (r,) = p.records
        assert r.iteration == it
        if fmt != "torchtitan":
            assert r.step_time_s == pytest.approx(t, rel=1e-3, abs=1e-4)
        want_loss = float(f"{loss:.4f}") if fmt == "torchtitan" else loss
        assert (math.isnan(r.loss) and math.isnan(loss)) or r.loss == pytest.approx(want_loss, rel=1e-3, abs=1e-4)
        assert r.tflops_per_gpu == pytest.approx(tflops, rel=1e-3, abs=0.01)


_PIECES = st.sampled_from(["MARK", "x", " ", "\n", "\r", "\r\n", "\u2588", "\u00e9", "ab", "MA", "RK"])


@settings(max_examples=80, deadline=None)
@given(st.lists(_PIECES, max_size=60), st.integers(1, 17))
def test_chunk_size_never_changes_what_is_found(pieces, chunk):
    data = "".join(pieces).encode()
    big = ScanState(pattern=re.compile("MARK"))
    small = ScanState(pattern=re.compile("MARK"))
    want = list(scan(io.BytesIO(data), big))
    assert list(scan(io.BytesIO(data), small, chunk_bytes=chunk)) == want
    assert (small.lines, small.bytes) == (big.lines, big.bytes)
    # and it agrees with the obvious slow definition
    text = data.decode("utf-8", errors="replace")
    slow = [(n + 1, seg) for n, line in enumerate(text.split("\n")) for seg in line.split("\r") if "MARK" in seg]
    assert want == slow


def test_overlong_line_without_separators_is_scanned_not_hoarded(monkeypatch):
    import llmb.results.reader as reader

    monkeypatch.setattr(reader, "MAX_LINE_CHARS", 1000)
    monkeypatch.setattr(reader, "CHUNK_BYTES", 512)
    data = b"y" * 5000 + b"completed step: 1, seconds: 2.0, TFLOP/s/device: 3.0\n"
    p = parse_bytes(data)
    assert p.bytes == len(data) and p.lines == 1  # no crash, no unbounded buffer


def test_mbridge_newer_step_time_line_with_extra_fields():
    data = (b"job_fp8/0 Step Time: 0.50s , 32680.36 tok/s/gpu, GPU utilization: 257.1 MODEL_TFLOP/s/GPU , Peak Mem: 64.5GB\n"
            b"job_fp8/0  [2025-12-22 15:18:33] iteration        5/      50 | consumed samples:  200 | "
            b"elapsed time per iteration (ms): 503.0 | lm loss: 8.114214E+00 | grad norm: 0.042 |\n")
    p = parse_bytes(data)
    assert p.format == "mbridge"
    (r,) = p.records
    assert (r.iteration, r.step_time_s, r.tflops_per_gpu, r.tokens_per_s_per_gpu) == (5, 0.5, 257.1, 32680.36)
    assert r.mem_bytes == pytest.approx(64.5e9) and r.grad_norm == 0.042


def test_nemo2_newer_memory_fields_and_job_prefix():
    data = (b"mbs_128gbs/0 Training epoch 0, iteration 45/99 | lr: 6.897e-06 | global_batch_size: 128 | global_step: 45 | "
            b"max_memory_reserved: 127785762816 | max_memory_allocated: 115792977920 | reduced_train_loss: 11.96 | "
            b"train_step_timing in s: 6.08 | TFLOPS_per_GPU: 1.249e+03 | consumed_samples: 5888\n")
    (r,) = parse_bytes(data).records
    assert (r.iteration, r.step_time_s, r.tflops_per_gpu, r.mem_bytes) == (45, 6.08, 1249.0, 127785762816)


def test_torchtitan_validation_lines_are_not_training_steps():
    data = ("[rank0]:[titan] - root - INFO - step: 10  loss:  3.0000  memory:  1.00GiB(1%)  tps: 1,000  tflops: 5.00  mfu: 1.00%\n"
            "[rank0]:[titan] - root - INFO - \x1b[33mvalidate step: 10  \x1b[32mloss:  9.9000  memory:  1.00GiB(1%)\x1b[39m\n")
    (r,) = parse_bytes(data.encode()).records
    assert r.loss == 3.0 and r.tokens_per_s_per_gpu == 1000
