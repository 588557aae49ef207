"""Benchmark (not a test): the llmb engine against Hugging Face transformers' LlamaForCausalLM
training the same model on this CPU, and both against the GEMM ceiling measured in this run.

Shape: hidden 512, 8 layers, 8 heads, 2 KV heads, FFN 1408, vocab 8192, seq 512, micro-batch
8; AdamW; same threads. fp32: both in fp32. bf16: transformers under ``torch.autocast`` (its
usual CPU recipe: fp32 weights cast every step); the engine with bf16 weights and fp32 master
weights (its single-process bf16 recipe), optionally torch.compile'd blocks.

Steps of the two are interleaved (HF, engine, HF, engine, ...) so machine drift hits both
alike; the first WARMUP steps of each are not timed. The GEMM ceiling is sampled the same way
(one 2048^3 GEMM after every step, median of the samples), so a busy machine lowers the
ceiling and the contenders together. Achieved GFLOP/s use llmb's ``megatron``
FLOPs convention for both. Needs ``transformers`` in the environment (not a test dependency):
``.venv/bin/pip install transformers``.

Usage: ``python benchmarks/engine_vs_hf.py [--steps N] [--warmup N] [--dtypes fp32,bf16] [--compile]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from llmb.catalog.schema import ModelSpec
from llmb.engine.ceiling import measure_gemm_flops
from llmb.plan.run import RunRequest, resolve_run
from llmb.engine.parallel import build_parallel
from llmb.engine.train import Trainer
from llmb.plan.flops import flops_per_sample
from llmb.plan.layout import derive

SHAPE = dict(layers=8, hidden=512, heads=8, query_groups=2, ffn_hidden=1408, vocab=8192, seq_len=512)
MICRO_BATCH = 8


def engine_trainer(dtype: str, compile_: bool) -> Trainer:
    spec = ModelSpec(family="llama", activation="swiglu", norm="rmsnorm", rope_theta=10000.0, **SHAPE)
    run = resolve_run(RunRequest(
        proxy="cpu-small", dtype=dtype, nproc=1, steps=1000, compile=compile_,
        overrides={"mbs": MICRO_BATCH, "gbs": MICRO_BATCH}, grad_clip=1.0,
    ))
    run = replace(run, recipe=replace(run.recipe, model=spec, derived=derive(run.layout, spec)))
    return Trainer(run, build_parallel(run.parallel_dims), torch.device("cpu"))


def hf_stepper(dtype: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=SHAPE["hidden"], intermediate_size=SHAPE["ffn_hidden"],
        num_hidden_layers=SHAPE["layers"], num_attention_heads=SHAPE["heads"],
        num_key_value_heads=SHAPE["query_groups"], vocab_size=SHAPE["vocab"],
        max_position_embeddings=SHAPE["seq_len"], tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)

    def step() -> float:
        rows = torch.randint(0, SHAPE["vocab"], (MICRO_BATCH, SHAPE["seq_len"] + 1), generator=gen)
        tokens, labels = rows[:, :-1], rows[:, 1:]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            logits = model(input_ids=tokens).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="timed steps per contender")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per contender")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--compile", action="store_true", help="also run the engine with torch.compile")
    args = ap.parse_args()

    spec = ModelSpec(family="llama", activation="swiglu", norm="rmsnorm", **SHAPE)
    flop_per_step = flops_per_sample(spec, "megatron") * MICRO_BATCH
    tokens_per_step = MICRO_BATCH * SHAPE["seq_len"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; shape {SHAPE}, micro-batch {MICRO_BATCH}")
    print(f"model FLOP per step (megatron convention): {flop_per_step / 1e9:.1f} GFLOP")
    for dtype in args.dtypes.split(","):
        contenders = {"transformers": hf_stepper(dtype), "llmb": engine_trainer(dtype, False).step}
        if args.compile:
            contenders["llmb+compile"] = engine_trainer(dtype, True).step
        times: dict[str, list[float]] = {k: [] for k in contenders}
        ceilings: list[float] = []
        for i in range(args.warmup + args.steps):
            for name, step in contenders.items():
                t = timed(step)
                if i >= args.warmup:
                    times[name].append(t)
                    ceilings.append(measure_gemm_flops(dtype, repeats=1))
        ceiling = statistics.median(ceilings)
        print(f"\n== {dtype}: measured GEMM ceiling {ceiling / 1e9:.1f} GFLOP/s "
              f"(median of {len(ceilings)} samples between steps, range "
              f"{min(ceilings) / 1e9:.0f}-{max(ceilings) / 1e9:.0f})")
        # Median and best step: on a shared machine the best step shows what the code can do,
        # the median what this run got.
        print(f"{'':14s} {'step s':>8s} {'tokens/s':>9s} {'GFLOP/s':>8s} {'of ceiling':>10s} {'vs HF':>6s}"
              f" | {'best s':>7s} {'GFLOP/s':>8s} {'of best ceiling':>15s} {'vs HF':>6s}")
        hf_med, hf_best = statistics.median(times["transformers"]), min(times["transformers"])
        for name, ts in times.items():
            med, best = statistics.median(ts), min(ts)
            gflops, best_gflops = flop_per_step / med / 1e9, flop_per_step / best / 1e9
            print(f"{name:14s} {med:8.3f} {tokens_per_step / med:9.0f} {gflops:8.1f} "
                  f"{gflops * 1e9 / ceiling * 100:9.1f}% {hf_med / med:5.2f}x"
                  f" | {best:7.3f} {best_gflops:8.1f} {best_gflops * 1e9 / max(ceilings) * 100:14.1f}% "
                  f"{hf_best / best:5.2f}x")


if __name__ == "__main__":
    main()
