"""Trace throughput: ``llmb trace`` on an NCCL INFO log against an equivalent ``grep | awk``.

Not a test. Generates an NCCL ``INFO`` log of about ``--size-mb`` MB (default 1 GB) in a
temporary folder: the collective lines of ``NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=COLL`` from 16
ranks on two hosts (five kinds of collective, two communicator sizes, message sizes from 1
element to 16 Mi), with one channel line in 50 as noise. Warms the page cache, then times

* llmb: :func:`llmb.results.collectives.summarize_path` (what ``llmb trace LOG`` prints):
  calls and bytes per (collective, communicator size), data types, ranks;
* grep | awk: ``grep -a ' NCCL INFO [A-Za-z]*: opCount '`` piped into an awk program that
  reads the fields by position (the fastest awk one would write for this layout) and sums the
  same calls, bytes and ranks;

checks both found the same numbers and prints MB/s and the ratio. Usage:
``python benchmarks/trace_throughput.py [--size-mb 1000] [--keep]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from llmb.results.collectives import summarize_path  # noqa: E402

OPS = (("AllReduce", 7), ("AllGather", 9), ("ReduceScatter", 9), ("Broadcast", 7), ("AllReduce", 9))
COUNTS = (1, 1024, 4096, 262144, 16777216)
LINE = ("node{h}:{pid}:{tid} [{dev}] NCCL INFO {op}: opCount {oc:x} sendbuff 0x7ffb4713c200 recvbuff 0x7ffb4713c200 "
        "count {count} datatype {dt} op 0 root 0 comm 0x55556b100660 [nranks={n}] stream 0x5555630c58b0\n")
NOISE = "node{h}:{pid}:{tid} [{dev}] NCCL INFO Channel 00/24 : 0 1 [0] -> [1] via P2P/CUMEM/read\n"
# ncclDataType_t sizes, indexed by type + 1 (awk arrays from split() start at 1)
AWK = r"""awk 'BEGIN { split("1 1 4 4 8 8 2 4 8 2 1 1", size, " ") }
{ sub(/:$/, "", $5); sub(/^\[nranks=/, "", $22); sub(/\]$/, "", $22); key = $5 " " $22
  calls[key]++; bytes[key] += $13 * size[$15 + 1]; split($1, h, ":"); ranks[h[1] ":" h[2] " " $2] = 1 }
END { for (k in calls) printf "%s %d %.0f\n", k, calls[k], bytes[k]; n = 0; for (r in ranks) n++; print "ranks", n }'"""
AWK_NAMES = {"AllReduce": "all_reduce", "AllGather": "all_gather", "ReduceScatter": "reduce_scatter",
             "Broadcast": "broadcast"}


def generate(path: Path, size_bytes: int) -> int:
    """Write the log; returns its number of collective lines."""
    rnd = random.Random(0)
    lines = 0
    written = 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < size_bytes:
            batch = []
            for _ in range(5000):
                h, dev = rnd.randrange(2), rnd.randrange(8)
                op, dt = rnd.choice(OPS)
                lines += 1
                batch.append(LINE.format(h=h, pid=1000 + dev, tid=2000 + dev, dev=dev, op=op, oc=lines, count=rnd.choice(COUNTS),
                                         dt=dt, n=rnd.choice((8, 16))))
                if lines % 50 == 0:
                    batch.append(NOISE.format(h=h, pid=1000 + dev, tid=2000 + dev, dev=dev))
            chunk = "".join(batch)
            fh.write(chunk)
            written += len(chunk)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=1000.0)
    ap.add_argument("--keep", action="store_true", help="keep the generated log")
    args = ap.parse_args()
    if not shutil.which("grep") or not shutil.which("awk"):
        print("grep and awk are needed for the comparison", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="llmb-trace-bench-"))
    try:
        log = tmp / "nccl.log"
        t0 = time.perf_counter()
        written = generate(log, int(args.size_mb * 1e6))
        size = log.stat().st_size
        print(f"generated {log} ({size / 1e6:.0f} MB, {written} collective lines) in {time.perf_counter() - t0:.1f} s")
        with open(log, "rb+") as fh:
            os.fsync(fh.fileno())  # written back now, not by the kernel while either side is timed
            # and in the page cache: both sides read from memory
            while fh.read(1 << 24):
                pass

        t0 = time.perf_counter()
        summary = summarize_path(log)
        t_llmb = time.perf_counter() - t0
        mine = {(s.op, s.nranks): (s.calls, s.bytes) for s in summary.rows()}

        env = dict(os.environ, LC_ALL="C")
        t0 = time.perf_counter()
        out = subprocess.run(f"grep -a ' NCCL INFO [A-Za-z]*: opCount ' {log} | {AWK}", shell=True, check=True,
                             capture_output=True, text=True, env=env).stdout.splitlines()
        t_awk = time.perf_counter() - t0
        theirs: dict[tuple[str, int | None], tuple[int, int]] = {}
        awk_ranks = 0
        for row in out:
            parts = row.split()
            if parts[0] == "ranks":
                awk_ranks = int(parts[1])
                continue
            key = (AWK_NAMES[parts[0]], int(parts[1]))
            calls, nbytes = theirs.get(key, (0, 0))
            theirs[key] = (calls + int(parts[2]), nbytes + int(parts[3]))

        same = mine == theirs and len(summary.ranks) == awk_ranks and summary.lines == written
        print(f"llmb trace : {t_llmb:7.2f} s  {size / 1e6 / t_llmb:8.1f} MB/s  {summary.lines} collectives, "
              f"{len(summary.ranks)} ranks")
        print(f"grep | awk : {t_awk:7.2f} s  {size / 1e6 / t_awk:8.1f} MB/s  {sum(c for c, _ in theirs.values())} collectives, "
              f"{awk_ranks} ranks")
        print(f"ratio      : llmb takes {t_llmb / t_awk:.2f}x the time of grep | awk; same calls, bytes and ranks: {same}")
        return 0 if same else 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
