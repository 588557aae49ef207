"""The memory model (``llmb.plan.memory``) against the engine's measured memory on CPU proxies.

Each case trains a CPU proxy for a few steps in a fresh interpreter and measures its peak
resident memory above the resident memory just before the model is built (the interpreter,
torch and llmb themselves are not the model's). The prediction is the memory model's
``peak_allocated_bytes`` for the same model, layout, dtype and recompute (no runtime overhead:
there is no CUDA context here). Varying the micro-batch size at a fixed model separates the
activations (the slope) from the model states (the rest).

What differs by design: the engine keeps bf16 weights and fp32 master copies with fp32 master
gradients in single-process bf16 runs (20 bytes per parameter, the model assumes Megatron's 18),
and eager PyTorch saves more activations than Transformer Engine's fused kernels. CPU RSS also
includes allocator slack. So the ratios show how far the GPU-oriented model carries to this
engine, not a pass/fail.

Run: .venv/bin/python benchmarks/memory_vs_engine.py
"""

from __future__ import annotations

import json
import subprocess
import sys

CASES = [
    # (workload, proxy, dtype, micro-batch)
    ("llama3.1", "cpu-small", "fp32", 1),
    ("llama3.1", "cpu-small", "fp32", 4),
    ("llama3.1", "cpu-small", "bf16", 1),
    ("llama3.1", "cpu-small", "bf16", 4),
    ("nemotron4", "cpu-small", "bf16", 1),
    ("nemotron4", "cpu-small", "bf16", 4),
]
STEPS = 3

_CHILD = r"""
import json, resource, sys
import torch
from llmb.catalog import default_catalog
from llmb.plan.run import RunRequest, resolve_run
from llmb.engine.parallel import build_parallel
from llmb.engine.train import Trainer
from llmb.plan.memory import estimate_memory

workload, proxy, dtype, mbs, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(2)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


run = resolve_run(RunRequest(workload=workload, proxy=proxy, dtype=dtype, nproc=1, steps=steps,
                             overrides={"mbs": mbs, "gbs": mbs}))
gpu = default_catalog().gpus["h100"]  # only the capacity verdict uses it
predicted = estimate_memory(run.model, run.derived, gpu, dtype, "none")
base = rss()
trainer = Trainer(run, build_parallel(run.parallel_dims), torch.device("cpu"))
for _ in range(steps):
    trainer.step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
w = predicted.worst
print(json.dumps({
    "measured": peak - base,
    "predicted": predicted.peak_allocated_bytes,
    "static": w.static_bytes,
    "activations": w.activations_bytes + w.logits_bytes,
    "params": sum(p.numel() for p in trainer.parts.parameters()),
}))
"""


def measure(case: tuple[str, str, str, int]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, case), str(STEPS)],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    mib = 2**20
    print(f"{'case':34s} {'params':>8s} {'predicted MiB':>14s} {'(static + act.)':>17s} "
          f"{'measured MiB':>13s} {'measured/predicted':>19s}")
    results = {}
    for case in CASES:
        r = results[case] = measure(case)
        name = f"{case[0]} {case[1]} {case[2]} mbs{case[3]}"
        print(f"{name:34s} {r['params'] / 1e6:7.1f}M {r['predicted'] / mib:14.1f} "
              f"({r['static'] / mib:6.1f} + {r['activations'] / mib:6.1f}) {r['measured'] / mib:13.1f} "
              f"{r['measured'] / r['predicted']:18.2f}x")
    print("\nactivation slope (mbs 1 -> 4), measured / predicted:")
    for (wl, proxy, dtype, mbs), r in results.items():
        if mbs != 1:
            continue
        r4 = results.get((wl, proxy, dtype, 4))
        if r4:
            slope = (r4["measured"] - r["measured"]) / (r4["activations"] - r["activations"])
            print(f"  {wl} {proxy} {dtype}: {slope:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
