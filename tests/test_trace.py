"""``llmb trace``: collectives from NCCL INFO lines (streamed) and from profiler traces."""

from __future__ import annotations

import io
import json

import pytest

from llmb.cli import main
from llmb.results.collectives import iter_lines, summarize_nccl_log, summarize_path, summarize_profiler_trace

LINE = ("{prefix}[{dev}] NCCL INFO {op}: opCount {oc:x} sendbuff 0x7ffb4713c200 recvbuff 0x7ffb4713c200 "
        "count {count} datatype {dt} op 0 root 0 comm 0x55556b100660 [nranks={n}] stream 0x5555630c58b0")


def test_nccl_log_counts_and_bytes():
    lines = [
        LINE.format(prefix="", dev=7, op="AllReduce", oc=2, count=1, dt=1, n=128),  # the seed's example
        LINE.format(prefix="node1:11:12 ", dev=0, op="AllReduce", oc=3, count=1000, dt=7, n=128),
        LINE.format(prefix="node1:11:13 ", dev=1, op="ReduceScatter", oc=4, count=4096, dt=9, n=8),
        "[3] NCCL INFO Init COMPLETE",
        LINE.format(prefix="", dev=0, op="AllGather", oc=5, count=10, dt=9, n=8)[:60],  # truncated
        "\x1b[0m garbage \xff\xfe",
    ]
    s = summarize_nccl_log(io.BytesIO("\r\n".join(lines).encode("utf-8", "surrogateescape")))
    rows = {(r.op, r.nranks): r for r in s.rows()}
    assert rows[("all_reduce", 128)].calls == 2 and rows[("all_reduce", 128)].bytes == 1 + 4000
    assert rows[("reduce_scatter", 8)].bytes == 4096 * 2 and rows[("reduce_scatter", 8)].dtypes == {"bfloat16"}
    assert ("all_gather", 8) not in rows
    assert s.lines == 3


def test_streaming_splits_lines_across_chunk_boundaries():
    text = b"".join(f"line {i}\r\n".encode() for i in range(1000))
    lines = list(iter_lines(io.BytesIO(text), chunk_bytes=7))
    assert [line for line in lines if line] == [f"line {i}".encode() for i in range(1000)]


def test_profiler_trace_summary():
    events = [
        {"ph": "X", "name": "gloo:all_reduce", "dur": 50.0, "pid": 1, "args": {"Input type": ["float"], "Input Dims": [[10, 100]]}},
        {"ph": "X", "name": "nccl:all_gather", "dur": 2000.0, "pid": 1, "args": {"Input type": ["c10::BFloat16"], "Input Dims": [[1024]]}},
        {"ph": "X", "name": "ncclDevKernel_AllReduce_Sum_f32_RING_LL", "dur": 30.0, "pid": 0,
         "args": {"In msg nelems": 256, "dtype": "Float", "Group size": 8}},
        {"ph": "X", "name": "aten::mm", "dur": 5.0, "pid": 1, "args": {}},
    ]
    s = summarize_profiler_trace(events)
    rows = {(r.op, r.nranks): r for r in s.rows()}
    assert rows[("all_reduce", None)].bytes == 4000 and rows[("all_reduce", None)].time_s == pytest.approx(50e-6)
    assert rows[("all_gather", None)].bytes == 2048
    assert rows[("all_reduce", 8)].bytes == 1024


def test_real_gloo_profile(tmp_path):
    torch = pytest.importorskip("torch")
    import torch.distributed as dist
    from torch.profiler import ProfilerActivity, profile

    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        x = torch.ones(1000)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            dist.all_reduce(x)
            dist.broadcast(x, 0)
        path = tmp_path / "trace.json"
        prof.export_chrome_trace(str(path))
    finally:
        dist.destroy_process_group()
    s = summarize_path(path)
    ops = {r.op: r for r in s.rows()}
    assert ops["all_reduce"].calls == 1 and ops["all_reduce"].bytes == 4000
    assert ops["broadcast"].calls == 1 and ops["all_reduce"].time_s > 0


def test_trace_cli(tmp_path, capsys):
    log = tmp_path / "job.log"
    log.write_text(LINE.format(prefix="", dev=0, op="AllReduce", oc=1, count=8, dt=7, n=2) + "\n")
    assert main(["trace", str(log), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["collectives"][0]["bytes"] == 32
    assert main(["trace", str(tmp_path / "missing.log")]) == 1
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["trace", str(bad)]) == 1
    assert main(["trace", str(tmp_path)]) == 1


def test_trace_takes_a_run_folder(tmp_path, capsys):
    """`llmb trace RUN_DIR` reads every rank's profiler trace and NCCL log in the folder."""
    run = tmp_path / "run"
    (run / "profiles").mkdir(parents=True)
    (run / "nccl").mkdir()
    event = {"name": "gloo:all_reduce", "ph": "X", "ts": 1, "dur": 2000.0, "pid": 7,
             "args": {"In msg nelems": 250, "Input type": ["float"], "Group size": 2}}
    for rank in (0, 1):
        (run / "profiles" / f"rank{rank}_steps2-3.json").write_text(json.dumps({"traceEvents": [event]}))
    (run / "nccl" / "nccl.host.1.log").write_text(
        LINE.format(prefix="host:1:1 ", dev=0, op="AllReduce", oc=1, count=8, dt=7, n=2) + "\n")
    assert main(["trace", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["files"] == 3 and data["kind"] == "mixed" and data["ranks"] == 3
    (ar,) = [c for c in data["collectives"] if c["op"] == "all_reduce" and c["nranks"] == 2]
    assert ar["calls"] == 3 and ar["bytes"] == 2 * 1000 + 32
