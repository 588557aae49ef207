"""The fast path (llmb.results.fast) is an optimisation, never a second parser: on any log,
parsing with it gives exactly what parsing line by line gives. Checked on generated logs full
of the cases it must give up on, on the fixtures and on the shared real-log excerpts, with
small chunks so that most of every log goes through the fast path."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llmb.results.reader as reader
from llmb.results.parse import LogStream, parse_stream
from llmb.results.parsers.megatron import MegatronParser
from llmb.results.parsers.nemo2 import Nemo2Parser

FIXTURES = Path(__file__).parent / "fixtures"
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-logs"


def both(data: bytes, chunk: int, fmt: str | None = None, rank: int | None = None):
    old = reader.CHUNK_BYTES
    reader.CHUNK_BYTES = chunk
    try:
        fast = parse_stream(io.BytesIO(data), fmt=fmt, rank=rank)
        slow = parse_stream(io.BytesIO(data), fmt=fmt, rank=rank, fast=False)
    finally:
        reader.CHUNK_BYTES = old
    return fast, slow


def same(a, b) -> bool:
    """Equal, NaN included (nan != nan, but their reprs agree)."""
    return repr(a) == repr(b)


def fast_chunks(data: bytes, chunk: int) -> int:
    old = reader.CHUNK_BYTES
    reader.CHUNK_BYTES = chunk
    try:
        stream = LogStream(io.BytesIO(data))
        for _ in stream:
            pass
    finally:
        reader.CHUNK_BYTES = old
    return stream.fast_chunks


def nemo2_line(it: int, t: float, rnd: random.Random) -> str:
    mem = f" | peak_memory_usage: {rnd.randrange(10**9, 10**11)}" if it % 3 else " | peak_memory_usage: 70833405952"
    return (f"Training epoch 0, iteration {it}/99 | lr: {1.5e-7 * (it + 1):.3e} | global_batch_size: 128 | "
            f"global_step: {it}{mem} | reduced_train_loss: {12 - it * 0.01:.2f} | train_step_timing in s: {t:.4g} | "
            f"consumed_samples: {128 * (it + 1)}")


def megatron_line(it: int, t: float, rnd: random.Random) -> str:
    return (f" [2026-01-27 10:49:15] iteration {it:>8d}/{100:>8d} | consumed samples: {it * 512:>12d} | "
            f"elapsed time per iteration (ms): {t * 1000:.1f} | throughput per GPU (TFLOP/s/GPU): {rnd.uniform(300, 500):.1f} | "
            f"learning rate: 1.500000E-04 | global batch size:   512 | lm loss: {9.8 - it * 1e-3:.6E} | loss scale: 1.0 | "
            f"grad norm: {rnd.uniform(1, 40):.3f} | number of skipped iterations:   0 | number of nan iterations:   0 |")


NOISE = [
    "a1b2c3d4e5f6:1844:2301 [0] NCCL INFO Channel 00/24 : 0 1 [0] -> [1] via P2P/CUMEM/read",
    "[NeMo W 2025-03-04 09:12:01 nemo_logging:405] UserWarning: async_grad_allreduce is deprecated",
    "      warnings.warn(",
    "",
]

# Lines the fast path must give up on (or read exactly as the line-by-line parser does).
TRICKY = [
    "Training epoch 0, iteration 7/99 | lr: 1e-4 | train_step_timing in s: 1,234.5",  # another layout, a comma
    "Training epoch 0, iteration 8/99 | train_step_timing in s: n/a",  # not a number
    "Training epoch 0, iteration 9/99 | train_step_timing in s: 3.1\r"
    "Training epoch 0, iteration 9/99 | train_step_timing in s: 3.2",  # a carriage return
    "\x1b[32mTraining epoch 0, iteration 10/99 | train_step_timing in s: 2.5\x1b[0m",  # ANSI codes
    "[rank3]:Training epoch 0, iteration 11/99 | train_step_timing in s: 2.6",  # a rank prefix
    "[default0]:Training epoch 0, iteration 12/99 | train_step_timing in s: 2.7",
    "1: Training epoch 0, iteration 13/99 | train_step_timing in s: 2.8",
    "Training epoch 0, iteration 14/99 | x Training epoch 0, iteration 15/99 | train_step_timing in s: 2.9",
    "Training epoch 0, iteration 16/99 | train_step_timing in s:  4.0 ",  # odd blanks
    "Training epoch 0, iteration 17/99",  # a head without fields
    " [2026-01-27 10:49:15] iteration       18/     100 | elapsed time per iteration (ms): 12,3 |",
    " [2026-01-27 10:49:15] iteration       19/     100 | elapsed time per iteration (ms): 1.5e3 | lm loss: nan |",
    "iteration 20/100 | iteration 21/100 | elapsed time per iteration (ms): 100.0 |",
    "\u00e9iteration 22/100 | elapsed time per iteration (ms): 100.0 |",  # no word boundary for Python's \\b
    "\u2588 [x] iteration 23/100 | elapsed time per iteration (ms): 100.0 | lm loss: 1.0 |",
    "Training epoch 0, iteration 24/99 | train_step_timing in s: 9" + "9" * 400,  # overflow
    "Training epoch 0, iteration 25/99 | reduced_train_loss: 1.0 | train_step_timing in s: inf",
    "\xff\xfe garbage Training epoch",
]


def generated_log(seed: int, kind: str, steps: int, tricky: float) -> bytes:
    rnd = random.Random(seed)
    make = nemo2_line if kind == "nemo2" else megatron_line
    out = []
    for it in range(steps):
        out += rnd.choices(NOISE, k=rnd.randrange(0, 4))
        if rnd.random() < tricky:
            good = make(it, 1.0, rnd)
            out.append(rnd.choice([
                *TRICKY,
                "Training epoch 0, iteration 98/99 then " + good,  # an earlier head: the parser reads that one
                " [2026-01-27 10:49:15] iteration 5/5 then " + good,
                " [2026-01-27 10:49:15] iteration 5/5 | then " + good,  # the parser reads from the first head
                good + " " + good,  # two heads on one line
                good + "\r" + good,
                "[rank3]:tqdm\r" + good,  # the rank prefix belongs to another update of the line
                "\x1b[2K[rank1]:\x1b[0m" + good,
                good.replace("1", "\u0661", 1),  # an Arabic-Indic digit: Python's \\d takes it
                good + " | extra: 1",
                good.replace(" | global_batch_size: 128", " | global_batch_size: 12|8"),  # "|" inside a value
                good.replace(" | global_batch_size: 128", " | global_batch_size: 12\t8"),  # a tab inside one
                good + " | Training epoch note: 1",  # the marker again, after the head
            ]))
        prefix = rnd.choice(["", "", "", "[rank0]:", "[rank1]:", "0: "]) if seed % 2 else ""
        step = it % 60 if seed % 3 == 0 else it  # a third of the logs restart (and repeat steps)
        out.append(prefix + make(step, rnd.uniform(0.5, 20), rnd))
    text = "\n".join(out) + rnd.choice(["\n", ""])
    return text.encode("utf-8", errors="surrogateescape") if "\udcff" in text else text.encode("utf-8", errors="replace")


@pytest.mark.parametrize("kind", ["nemo2", "megatron"])
def test_clean_logs_go_through_the_fast_path(kind):
    data = generated_log(seed=6, kind=kind, steps=400, tricky=0.0)
    fast, slow = both(data, chunk=4096)
    assert same(fast, slow) and len(fast.records) == 60 and fast.duplicates == 340
    assert fast_chunks(data, 4096) >= len(data) // 4096 - 2  # all but the first chunks or so


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), kind=st.sampled_from(["nemo2", "megatron"]), steps=st.integers(1, 300),
       tricky=st.sampled_from([0.0, 0.01, 0.2]), chunk=st.sampled_from([97, 1024, 8192]),
       fmt=st.sampled_from([None, "nemo2", "megatron"]), rank=st.sampled_from([None, 0, 1, 3]))
def test_fast_and_line_by_line_agree(seed, kind, steps, tricky, chunk, fmt, rank):
    data = generated_log(seed, kind, steps, tricky)
    fast, slow = both(data, chunk, fmt=fmt, rank=rank)
    assert same(fast, slow)
    # and the chunk size changes nothing (the format is settled mid-chunk in one, not the other)
    assert same(slow, parse_stream(io.BytesIO(data), fmt=fmt, rank=rank, fast=False))


def _logs():
    # the shared real-log excerpts live beside the checkout, where they exist (not in every CI)
    return sorted(FIXTURES.rglob("*.log")) + (sorted(REAL.glob("*.log")) if REAL.exists() else [])


@pytest.mark.parametrize("path", _logs(), ids=lambda p: p.name)
@pytest.mark.parametrize("chunk", [64, 4096])
def test_fixtures_and_real_logs_agree(path, chunk):
    data = path.read_bytes()
    fast, slow = both(data, chunk)
    assert same(fast, slow)
    # and repeated, so that later copies of each step line are read through the fast path
    fast, slow = both(data * 5, chunk)
    assert same(fast, slow)


@pytest.mark.parametrize("parser, line", [
    (Nemo2Parser(), nemo2_line(3, 1.5, random.Random(0))),
    (MegatronParser(), megatron_line(3, 1.5, random.Random(0))),
])
def test_the_compiled_layout_reads_its_own_line_as_the_parser_does(parser, line):
    from llmb.results.fast import read_chunk

    layout = parser.layout(line)
    assert layout is not None
    records, last, newlines = read_chunk(layout, (line + "\n\nnoise\n").encode(), 41)
    want = parser.feed(line, 41, None)
    assert records == [want] and last == {None: (3, 99 if isinstance(parser, Nemo2Parser) else 100)} and newlines == 3


# ---------------------------------------------------------------- one log, several processes

def _split(monkeypatch, workers: int):
    import llmb.results.split as split

    monkeypatch.setattr(split, "MIN_BYTES_PER_WORKER", 1)
    monkeypatch.setattr(split, "PROBE_BYTES", 2048)
    monkeypatch.setattr(split.os, "cpu_count", lambda: workers)
    monkeypatch.setattr(reader, "CHUNK_BYTES", 1024)


@pytest.mark.parametrize("kind", ["nemo2", "megatron"])
@pytest.mark.parametrize("seed", [1, 2, 3, 6])
@pytest.mark.parametrize("workers", [2, 3])
def test_split_reading_gives_what_one_process_gives(tmp_path, monkeypatch, kind, seed, workers):
    import llmb.results.split as split
    from llmb.results.parse import parse_file

    data = generated_log(seed, kind, steps=600, tricky=0.05)
    log = tmp_path / "big.log"
    log.write_bytes(data)
    want = parse_stream(io.BytesIO(data), fast=False, path=str(log))
    _split(monkeypatch, workers)
    forked = []
    real_fork = split.fork
    monkeypatch.setattr(split, "fork", lambda *a: forked.append(a) or real_fork(*a))
    got = parse_file(log)
    assert same(got, want)
    assert len(forked) == workers - 1  # it did split
    for rank in (0, 1, 5):
        assert same(parse_file(log, rank=rank), parse_stream(io.BytesIO(data), rank=rank, fast=False, path=str(log)))


def test_a_failing_worker_falls_back_to_one_process(tmp_path, monkeypatch):
    import llmb.results.split as split
    from llmb.results.parse import parse_file

    data = generated_log(6, "nemo2", steps=600, tricky=0.0)
    log = tmp_path / "big.log"
    log.write_bytes(data)
    _split(monkeypatch, 2)

    def broken(*args):
        raise RuntimeError("a worker died")

    monkeypatch.setattr(split, "_read_range", broken)
    assert same(parse_file(log), parse_stream(io.BytesIO(data), fast=False, path=str(log)))


def test_a_format_settled_only_at_the_probe_end_is_not_split(tmp_path, monkeypatch):
    """One Megatron line in the probe could still turn out Megatron-Bridge: read in one go."""
    import llmb.results.split as split
    from llmb.results.parse import parse_file

    rnd = random.Random(0)
    lines = ["noise " * 50] * 20 + [megatron_line(1, 1.0, rnd)] + ["noise " * 50] * 200
    lines += [megatron_line(i, 1.0, rnd) if i % 2 else "Step Time : 7.04s GPU utilization: 400.1MODEL_TFLOP/s/GPU"
              for i in range(2, 400)]
    data = ("\n".join(lines) + "\n").encode()
    log = tmp_path / "mixed.log"
    log.write_bytes(data)
    _split(monkeypatch, 2)
    monkeypatch.setattr(split, "PROBE_BYTES", 4096)
    want = parse_stream(io.BytesIO(data), fast=False, path=str(log))
    assert want.format == "mbridge"
    assert same(parse_file(log), want)


# ---------------------------------------------------------------- mapped files, lazy records

@pytest.mark.parametrize("seed", [0, 1, 3, 4])
def test_a_mapped_file_reads_as_a_stream_does(tmp_path, seed):
    """parse_file maps the file and cuts its chunks from the mapping (reader.FileRange); the
    records are those of the stream read line by line."""
    from llmb.results.parse import parse_file

    data = generated_log(seed, "nemo2" if seed % 2 else "megatron", steps=500, tricky=0.05)
    log = tmp_path / "run.log"
    log.write_bytes(data)
    mapped = parse_file(log)
    want = parse_stream(io.BytesIO(data), fast=False, path=str(log))
    assert same(mapped, want)


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_mapped_and_read_pieces_end_at_separators(tmp_path, monkeypatch, chunk):
    """Both ways of cutting a file (from the mapping, or as read) give pieces that make up the
    file, none empty, each ending at a line break or a carriage return unless it is an
    overlong run or the file's end."""
    rnd = random.Random(chunk)
    monkeypatch.setattr(reader, "MAX_LINE_CHARS", 300)
    monkeypatch.setattr(reader, "FIRST_CHUNK_BYTES", 5)
    data = b"".join(rnd.choice([b"a", b"bb ", b"\n", b"\r", b"x" * 400, b"step 1\r\n"]) for _ in range(600)) + b"tail"
    log = tmp_path / "any.log"
    log.write_bytes(data)
    with open(log, "rb") as fh:
        mapped = reader.FileRange(fh, 0, len(data))
        assert mapped.map is not None
        cut_from_map = list(mapped.pieces(chunk))
    for pieces in (cut_from_map, list(reader._read_pieces(io.BytesIO(data), chunk))):
        assert b"".join(pieces) == data and all(pieces)
        assert all(p[-1:] in (b"\n", b"\r") or len(p) >= 300 for p in pieces[:-1]) and pieces[-1].endswith(b"tail")
        overlong = [p for p in pieces[:-1] if p[-1:] not in (b"\n", b"\r")]
        assert overlong and all(b"\n" not in p and b"\r" not in p for p in overlong)


def test_records_kept_as_columns_behave_as_their_tuple():
    """A parsed log's records (record.StepRecords) built from columns, lists and arrays mixed,
    as the split fast path leaves them: they index, slice, compare and print as the tuple."""
    import numpy as np

    from llmb.results.record import StepRecord, StepRecords, columns_of

    recs = [StepRecord(iteration=i, raw_line_no=10 + i, step_time_s=1.0 + i / 8, loss=None if i % 2 else 2.5)
            for i in range(7)]
    first, second = columns_of(recs[:3]), columns_of(recs[3:])
    second = [np.asarray(c) if c[0] is not None and all(v is not None for v in c) else c for c in second]
    second[StepRecord._fields.index("grad_norm")] = None  # a field no record of a batch has
    lazy = StepRecords.of_columns([first, second])
    assert len(lazy) == 7 and lazy[4] == recs[4] and lazy[-1] == recs[-1]
    assert type(lazy[5].iteration) is int and type(lazy[5].step_time_s) is float
    assert lazy.column("step_time_s") == [r.step_time_s for r in recs]
    assert lazy.column("grad_norm") == [None] * 7
    with pytest.raises(IndexError):
        lazy[7]
    assert lazy == tuple(recs) and repr(lazy) == repr(tuple(recs)) and lazy[1:3] == tuple(recs[1:3])
    assert list(lazy) == recs and StepRecords(recs) == lazy
