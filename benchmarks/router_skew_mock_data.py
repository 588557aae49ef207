"""How unbalanced is a router on the published runs' data? The dgxc-benchmarking recipes train
on synthetic data (uniformly random token ids: NeMo's mock data module) for a few dozen steps
from a random initialisation, so the router is close to its initial weights and sees hidden
states with no structure. This simulates that router for Llama 4 Maverick at its GB200 layout
(hidden 5120, 128 experts, top-1, EP 64: two experts per rank; one micro-batch of the EP group,
64 x 8192 tokens): router weights drawn at Megatron's init std 0.02, hidden states isotropic,
each token to its highest-scoring expert. It prints the coefficient of variation of the
experts' loads and the busiest EP rank's load over the mean, against what the step-time
model's ``expert_load_cv`` (not fitted: the default is this simulation's CV) charges a
dropless layout of that shape (``llmb.plan.predict.load_factor``), and what it charges the
published recipe, which pads every expert to capacity factor 1.0 (none).

The hidden states of a real network are not isotropic, so this is an estimate of what
routing noise and the router's initial weights alone do, not a measurement of a run.

Takes about 15 s (``--full``: three draws of the whole micro-batch, about 2.5 min).
Run: .venv/bin/python benchmarks/router_skew_mock_data.py [--full]
"""

from __future__ import annotations

import sys

import numpy as np

from llmb.catalog import default_catalog
from llmb.plan.calibrate import stored_efficiency
from llmb.plan.predict import load_factor

EP, SEQ, INIT_STD = 64, 8192, 0.02


def simulate(hidden: int, experts: int, ep: int, tokens: int, seed: int, chunk: int = 32768) -> tuple[float, float]:
    """(CV of the experts' loads, busiest EP rank's load over the mean) for one draw."""
    rng = np.random.default_rng(seed)
    router = (rng.standard_normal((hidden, experts)) * INIT_STD).astype(np.float32)
    counts = np.zeros(experts)
    for start in range(0, tokens, chunk):
        h = rng.standard_normal((min(chunk, tokens - start), hidden)).astype(np.float32)
        counts += np.bincount((h @ router).argmax(axis=1), minlength=experts)
    ranks = counts.reshape(ep, experts // ep).sum(axis=1)
    return float(counts.std() / counts.mean()), float(ranks.max() / ranks.mean())


def main(argv: list[str]) -> int:
    model = default_catalog().workload("llama4-maverick").sizes["400b"].model
    moe = model.moe
    draws, tokens = (3, EP * SEQ) if "--full" in argv else (1, EP * SEQ // 8)
    results = [simulate(model.hidden, moe.num_experts, EP, tokens, seed) for seed in range(draws)]
    eff = stored_efficiency()
    dropless = load_factor(eff, moe.num_experts, EP)
    recipe = load_factor(eff, moe.num_experts, EP, moe.capacity_factor)
    for cv, busiest in results:
        print(f"simulated: expert-load CV {cv:.3f}, busiest of {EP} EP ranks {busiest:.3f} x the mean ({tokens} tokens)")
    print(f"model: expert_load_cv {eff.expert_load_cv:.4g} charges a dropless layout's busiest rank {dropless:.3f} x "
          f"the mean; the recipe (capacity factor {moe.capacity_factor}) {recipe:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
