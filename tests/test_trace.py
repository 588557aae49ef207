"""``llmb trace``: collectives from NCCL INFO lines (streamed) and from profiler traces."""

from __future__ import annotations

import io
import json

import pytest

from llmb.cli import main
import llmb.results.reader as reader
from llmb.results.collectives import summarize_nccl_log, summarize_path, summarize_profiler_trace

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


def test_chunk_boundaries_change_nothing(monkeypatch):
    lines = [LINE.format(prefix=f"node{i % 3}:{10 + i % 5}:99 ", dev=i % 4, op=("AllReduce", "AllGather")[i % 2], oc=i,
                         count=100 + i % 7, dt=(7, 9)[i % 2], n=8) for i in range(300)]
    data = ("\n".join(lines) + "\n").encode()
    whole = summarize_nccl_log(io.BytesIO(data))
    for chunk in (7, 100, 1000):
        monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
        assert summarize_nccl_log(io.BytesIO(data)).as_dict() == whole.as_dict()
    assert whole.lines == 300 and sum(r.calls for r in whole.rows()) == 300
    assert sum(r.bytes for r in whole.rows()) == sum((100 + i % 7) * (4, 2)[i % 2] for i in range(300))


def test_ranks_are_ranks_not_hosts_or_processes():
    """Two hosts x four processes (PyTorch: one GPU each) are 8 ranks; one JAX process driving
    8 GPUs is 8 ranks too; launcher prefixes ([rank3]:, 3: ) are looked past."""
    torch_style = [LINE.format(prefix=f"node{h}:{100 + p}:{200 + p} ", dev=p, op="AllReduce", oc=1, count=4, dt=7, n=8)
                   for h in range(2) for p in range(4) for _ in range(3)]
    s = summarize_nccl_log(io.BytesIO(("\n".join(torch_style) + "\n").encode()))
    assert len(s.ranks) == 8 and s.lines == 24
    jax_style = [f"[rank0]:{LINE.format(prefix='host:7:7 ', dev=d, op='AllGather', oc=1, count=4, dt=9, n=8)}"
                 for d in range(8)] + [f"0: {LINE.format(prefix='host:7:8 ', dev=d, op='AllGather', oc=2, count=4, dt=9, n=8)}"
                                       for d in range(8)]
    s = summarize_nccl_log(io.BytesIO("\r\n".join(jax_style).encode()))
    assert len(s.ranks) == 8 and s.lines == 16 and s.rows()[0].bytes == 16 * 8


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


def test_a_big_log_read_by_several_processes_sums_the_same(tmp_path, monkeypatch):
    import llmb.results.split as split

    lines = [LINE.format(prefix=f"node{i % 2}:{10 + i % 4}:99 ", dev=i % 4, op=("AllReduce", "ReduceScatter")[i % 2], oc=i,
                         count=64 + i % 5, dt=(7, 9)[i % 2], n=(8, 16)[i % 3 == 0]) for i in range(3000)]
    log = tmp_path / "nccl.log"
    log.write_text("\n".join(lines) + "\n")
    one = summarize_path(log).as_dict()
    monkeypatch.setattr(split, "MIN_BYTES_PER_WORKER", 1)
    monkeypatch.setattr(split, "PROBE_BYTES", 1000)
    monkeypatch.setattr(split.os, "cpu_count", lambda: 3)
    forked = []
    real_fork = split.fork
    monkeypatch.setattr(split, "fork", lambda *a: forked.append(a) or real_fork(*a))
    assert summarize_path(log).as_dict() == one and len(forked) == 2
    assert one["lines"] == 3000 and one["ranks"] == 4  # i % 4 fixes host, pid and device together
