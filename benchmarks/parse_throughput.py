"""Parse throughput: llmb's streaming parser against ``grep | awk`` on the same generated log.

Not a test. Generates a NeMo 2 log of about ``--size-mb`` MB in a temporary folder (default
1 GB; each step line follows ``--noise-lines`` lines of NCCL INFO and warning noise as in real
multi-node logs, 5 by default, 0 for a log of step lines only), writes it to disk and warms the
page cache, then times, ``--repeat`` times each and alternately (the median counts):

* llmb: :func:`llmb.results.parse_file` — autodetection, streaming, rank selection, every
  field of every step read into numbers in memory (what ``llmb parse`` does before its
  statistics); a big log is read by one process per core (``LLMB_PARSE_WORKERS=1`` for one).
  The records are built from those columns when first read (:class:`~llmb.results.record.StepRecords`):
  that is timed apart and printed too;
* grep | awk: ``grep -a 'train_step_timing in s:' | awk`` pulling iteration and step time out
  of the same lines and averaging them;

checks both found the same number of steps and the same mean step time, and prints MB/s and
the ratios. Usage: ``python benchmarks/parse_throughput.py [--size-mb 1000] [--noise-lines 5]
[--repeat 3] [--keep]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from llmb.results import parse_file  # noqa: E402

NOISE = (
    "a1b2c3d4e5f6:{pid}:{tid} [{r}] NCCL INFO Channel {c:02d}/24 : {r} {r1} [{r}] -> [{r1}] via P2P/CUMEM/read\n",
    "a1b2c3d4e5f6:{pid}:{tid} [{r}] NCCL INFO Connected all rings, use ring PXN 0 GDR 1\n",
    "[NeMo W 2025-03-04 09:12:01 nemo_logging:405] /opt/megatron-lm/megatron/core/tensor_parallel/layers.py:609: "
    "UserWarning: async_grad_allreduce is deprecated\n",
    "      warnings.warn(\n",
    "[NeMo I 2025-03-04 09:16:40 utils:{c}] Rank {r}: memory after step {c}: allocated 44.27 GB, reserved 70.83 GB\n",
)
STEP = (
    "Training epoch 0, iteration {i}/{last} | lr: {lr:.3e} | global_batch_size: 128 | global_step: {i} | "
    "peak_memory_usage: 70833405952 | memory_allocated: 44271689728 | reduced_train_loss: {loss:.2f} | "
    "train_step_timing in s: {t:.4g} | consumed_samples: {cs}\n"
)
AWK = r"""awk -F' [|] ' '{
  for (i = 2; i <= NF; i++) if (index($i, "train_step_timing in s: ") == 1) { t = substr($i, 25) + 0; n++; s += t }
} END { if (n) printf "%d %.9f\n", n, s / n; else print 0, 0 }'"""


def generate(path: Path, size_bytes: int, noise_lines: int) -> tuple[int, float]:
    """Write the log; returns (step lines, mean step time) as written."""
    rnd = random.Random(0)
    steps = 0
    total_t = 0.0
    written = 0
    batch: list[str] = []
    # the planned total is unknown until the end; a large number keeps lines realistic
    last = 10**7
    with open(path, "w", encoding="utf-8") as fh:
        while written < size_bytes:
            if noise_lines:
                for _ in range(noise_lines):
                    batch.append(rnd.choice(NOISE).format(pid=1844, tid=2301, r=steps % 8, r1=(steps + 1) % 8, c=steps % 24))
            t = 12.3 + rnd.random() * 0.1
            batch.append(STEP.format(i=steps, last=last, lr=1.5e-7 * (steps + 1), loss=12.0 - steps * 1e-6, t=t, cs=128 * (steps + 1)))
            total_t += float(f"{t:.4g}")
            steps += 1
            if len(batch) >= 6000 + noise_lines:
                chunk = "".join(batch)
                fh.write(chunk)
                written += len(chunk)
                batch = []
        if batch:
            chunk = "".join(batch)
            fh.write(chunk)
    return steps, total_t / steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=1000.0)
    ap.add_argument("--noise-lines", type=int, default=5, help="noise lines per step line (0: steps only)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each side (alternating; the median counts)")
    ap.add_argument("--keep", action="store_true", help="keep the generated log")
    args = ap.parse_args()
    if not shutil.which("grep") or not shutil.which("awk"):
        print("grep and awk are needed for the comparison", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="llmb-bench-"))
    try:
        log = tmp / "nemo2_bench.log"
        t0 = time.perf_counter()
        steps, mean_written = generate(log, int(args.size_mb * 1e6), max(0, args.noise_lines))
        size = log.stat().st_size
        print(f"generated {log} ({size / 1e6:.0f} MB, {steps} step lines, {args.noise_lines} noise lines per step line) "
              f"in {time.perf_counter() - t0:.1f} s")
        with open(log, "rb+") as fh:
            os.fsync(fh.fileno())  # written back now, not by the kernel while either side is timed
            while fh.read(1 << 24):  # and in the page cache: both sides read from memory
                pass

        env = dict(os.environ, LC_ALL="C")
        t_llmb, t_build, t_awk = [], [], []
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            parsed = parse_file(log)
            t_llmb.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            records = list(parsed.records)
            t_build.append(time.perf_counter() - t0)
            times = [r.step_time_s for r in records]
            mean_llmb = sum(times) / len(times)
            del parsed, records

            t0 = time.perf_counter()
            out = subprocess.run(f"grep -a 'train_step_timing in s:' {log} | {AWK}", shell=True, check=True,
                                 capture_output=True, text=True, env=env).stdout.split()
            t_awk.append(time.perf_counter() - t0)
            n_awk, mean_awk = int(out[0]), float(out[1])

        same = len(times) == n_awk == steps and abs(mean_llmb - mean_awk) < 1e-6 and abs(mean_llmb - mean_written) < 1e-6
        llmb, build, awk = statistics.median(t_llmb), statistics.median(t_build), statistics.median(t_awk)
        runs = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(t_llmb, t_awk))
        print(f"llmb parse_file : {llmb:7.2f} s  {size / 1e6 / llmb:8.1f} MB/s  {len(times)} steps, mean {mean_llmb:.6f} s")
        print(f"  + its records : {build:7.2f} s  (built from the parsed columns on first read)")
        print(f"grep | awk      : {awk:7.2f} s  {size / 1e6 / awk:8.1f} MB/s  {n_awk} steps, mean {mean_awk:.6f} s")
        print(f"runs (llmb/awk) : {runs}")
        print(f"ratio           : llmb takes {llmb / awk:.2f}x the time of grep | awk ({(llmb + build) / awk:.2f}x with every "
              f"record built); same steps and mean: {same}")
        return 0 if same else 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
