"""Benchmark (not a test): checkpoint save/load times and sizes of the default proxy on 1 and 2
ranks, and the step-time overhead of torch.profiler.

Everything runs through ``llmb run --json`` as a user would run it (in-process for 1 rank,
torchrun for 2), in a temporary experiments folder:

* checkpoints, per world size: a run of ``--steps`` steps saving every ``--steps // 2`` steps
  (synchronous DCP saves; the times are each save's wall time until it is published) and a
  second run that loads the last checkpoint (``Time spent in load_checkpoint``) and trains one
  step. Size = bytes of the files of one checkpoint.
* profiler overhead, 1 rank: runs of the same length with and without ``--profile`` over
  every step after the statistics warm-up, alternated ``--repeats`` times (this machine's
  timings drift 15-40 % between runs, so the pairs matter more than any single number);
  overhead = mean step time of the profiled window / unprofiled window - 1.

Usage: ``python benchmarks/checkpoint_profile.py [--steps N] [--profile-steps N] [--repeats N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

LLMB = [sys.executable, "-c", "import sys; from llmb.cli import run; sys.argv[0] = 'llmb'; run()"]


def llmb(args: list[str], root: Path) -> dict:
    env = {**os.environ, "LLMB_EXPERIMENTS_DIR": str(root)}
    proc = subprocess.run(LLMB + ["run", *args, "--json"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"llmb run {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def checkpoints(nproc: int, steps: int, root: Path) -> dict:
    every = max(1, steps // 2)
    saved = llmb(["--nproc", str(nproc), "--steps", str(steps), "--save-every", str(every)], root)
    loaded = llmb(["--nproc", str(nproc), "--steps", str(steps + 1), "--load", saved["experiment_dir"]], root)
    saves = saved["checkpoints"]
    return {
        "nproc": nproc,
        "size": saved["size"], "dtype": saved["dtype"],
        "save_s": [s["duration_s"] for s in saves],
        "bytes": saves[-1]["bytes"],
        "load_s": loaded["resumed_from"]["load_time_s"],
        "step_time_s": saved["window"]["mean"] if saved["window"] else None,
    }


def profiler_overhead(steps: int, repeats: int, root: Path) -> dict:
    warmup = 2
    common = ["--nproc", "1", "--steps", str(steps), "--warmup-steps", str(warmup)]
    plain, profiled = [], []
    for _ in range(repeats):
        plain.append(llmb(common, root)["window"]["mean"])
        s = llmb(common + ["--profile", "--profile-start-step", str(warmup + 1), "--profile-stop-step", str(steps)], root)
        assert s["timing_comparable"] is False
        profiled.append(s["window"]["mean"])
    trace = next(root.glob("*/*/profiles/rank0_*.json"))
    return {"plain_s": plain, "profiled_s": profiled, "trace_bytes": trace.stat().st_size,
            "overhead": statistics.fmean(profiled) / statistics.fmean(plain) - 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="steps of the checkpoint runs")
    ap.add_argument("--profile-steps", type=int, default=8, help="steps of each profiler-overhead run")
    ap.add_argument("--repeats", type=int, default=2, help="pairs of runs with and without the profiler")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmb-bench-") as tmp:
        root = Path(tmp)
        rows = [checkpoints(n, args.steps, root / f"ckpt{n}") for n in (1, 2)]
        prof = profiler_overhead(args.profile_steps, args.repeats, root / "prof")
    print(f"default proxy ({rows[0]['size']}, {rows[0]['dtype']}): DCP checkpoints (sync save; time until published)")
    print(f"{'ranks':>5} {'size MiB':>9} {'save s (each)':>22} {'load s':>7} {'step s':>7}")
    for r in rows:
        saves = ", ".join(f"{x:.3f}" for x in r["save_s"])
        print(f"{r['nproc']:>5} {r['bytes'] / 2**20:>9.1f} {saves:>22} {r['load_s']:>7.3f} {r['step_time_s']:>7.3f}")
    print(f"torch.profiler overhead, 1 rank, {args.profile_steps} steps (window = steps 3..{args.profile_steps}):")
    print("  step time without profiler (s): " + ", ".join(f"{x:.3f}" for x in prof["plain_s"]))
    print("  step time with profiler    (s): " + ", ".join(f"{x:.3f}" for x in prof["profiled_s"]))
    print(f"  overhead: {prof['overhead'] * 100:+.1f} %   (trace file {prof['trace_bytes'] / 2**20:.1f} MiB per rank)")
    print(json.dumps({"checkpoints": rows, "profiler": prof}))


if __name__ == "__main__":
    main()
