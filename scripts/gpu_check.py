"""The GPU validation kit's driver (run it through ``scripts/gpu-check.sh``).

On one CUDA GPU, in one run of at most ``--budget-s`` seconds (default 450), in this order:

env       GPU, driver, torch / CUDA / NCCL versions, ``llmb doctor``
gemm      single GEMMs of the shapes the predictor prices differently (Grok-1's expert GEMMs at
          ETP 1 and ETP 4, a token and a reduction scan), BF16 and FP8 (``torch._scaled_mm``):
          each one's share of the datasheet peak against the share ``llmb predict`` gives it;
          Maverick's two local experts one after another against one dense GEMM of their tokens
bf16      the engine on the ``gpu-width`` proxy (Llama 3.1 8B at its published width, 4 layers,
          sequence 8192, MBS 1), ``--steps`` steps: step time, tokens/s, TFLOP/s, MFU over the
          datasheet peak; peak CUDA memory allocated against ``llmb predict``'s memory model
compile   the same with ``torch.compile``d blocks
fp8       the same in FP8 (torchao float8): speedup over bf16, loss against bf16 step by step
hf        transformers' ``LlamaForCausalLM`` (sdpa, bf16 autocast, fp32 weights, AdamW) on the
          same shape and tokens per step: MFU side by side (recipe FLOPs for both)
titan     torchtitan's Llama 3 model (its own module, same shape, bf16 autocast), if it imports
backend   ``llmb run --backend torchtitan`` on the same proxy: torchtitan's own trainer launched by
          llmb, its log parsed into the job store; tokens/s against the engine's bf16 run
moe, nemotron  a Llama 4 and a Nemotron-4 proxy (cpu-small shapes) train on the GPU
dcp       a checkpoint saved on CUDA and loaded into a fresh run
profiler  a torch.profiler window, and ``llmb trace`` of it
nccl      an NCCL process group at world size 1: an all-reduce on the GPU
results   ``llmb parse`` of the bf16 run's log equals its summary; the runs are in the job store;
          ``llmb report`` writes its plots

Every check's outcome (ok / FAIL with the reason / SKIP with the reason) is a row of the table
printed last and written to ``OUT/gpu-check.md`` and ``OUT/gpu-check.json``; every command's
output goes to ``OUT/gpu-check.log``. Without CUDA the kit refuses in one line (exit 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FP8_LOSS_TOLERANCE = 0.02  # per step, relative to bf16's loss (same init, same tokens)
MEMORY_TOLERANCE = 0.10  # the target for the memory model against the measured peak
# (what, m tokens, n outputs, k the reduction). Grok-1 314B's expert GEMMs on one micro-batch
# (sequence 8192, top-2 of 8 experts, EP 8, TP 4, hidden 6144, FFN 32768, gate and up fused):
# NeMo 1's ETP 4 (CP 2: 8192 tokens per expert, the FFN split 4 ways) and NeMo 2's ETP 1
# (2048 tokens, the whole FFN). Same FLOPs; the predictor's per-dimension knee charges ETP 1's
# about 10 % more, XLA's measured H100 shapes up to 4096 about 6 % (benchmarks/
# predict_gemm_shapes.py); these are the full-size shapes that table lacks.
GEMM_SHAPES = [
    ("square 8192", 8192, 8192, 8192),
    ("grok fc1 ETP1", 2048, 65536, 6144),
    ("grok fc1 ETP4", 8192, 16384, 6144),
    ("grok fc2 ETP1", 2048, 6144, 32768),
    ("grok fc2 ETP4", 8192, 6144, 8192),
    *((f"tokens {m}", m, 8192, 8192) for m in (256, 512, 1024, 2048, 4096)),
    *((f"reduction {k}", 8192, 8192, k) for k in (1024, 2048, 4096)),
]

# (what, local experts, tokens per expert, n outputs, k reduction). Llama 4 Maverick's routed
# experts on GB200 (128 experts, EP 64: two per GPU; one micro-batch of 8192 tokens per rank,
# top-1: 4096 tokens per expert; hidden 5120, expert FFN 8192, gate and up fused), timed one
# expert after another as Transformer Engine's grouped linear layer launches them, against one
# dense GEMM of all their tokens (the same FLOPs): the per-expert cost the model's expert knee
# and FP8 factor stand for, which only Grok-1's rows inform today.
EXPERT_SHAPES = [
    ("maverick fc1 2x4096", 2, 4096, 16384, 5120),
    ("maverick fc2 2x4096", 2, 4096, 5120, 8192),
]


class Kit:
    def __init__(self, out: Path, steps: int, budget_s: float, width_proxy: str = "gpu-width",
                 small_proxy: str = "cpu-small", device: str = "cuda"):
        self.out, self.steps, self.budget_s = out, steps, budget_s
        self.width_proxy, self.small_proxy, self.device = width_proxy, small_proxy, device
        self.t0 = time.perf_counter()
        self.work = Path(tempfile.mkdtemp(prefix="llmb-gpu-check-"))
        self.rows: list[dict] = []
        self.facts: dict = {}
        self.log = open(out / "gpu-check.log", "a", encoding="utf-8")
        self.env = {**os.environ, "LLMB_HOME": str(self.work / "home"),
                    "LLMB_EXPERIMENTS_DIR": str(self.work / "experiments"), "PYTHONUNBUFFERED": "1",
                    "COLUMNS": "120"}

    # -- plumbing --------------------------------------------------------------------------
    def left_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def row(self, check: str, status: str, result: str, **data) -> None:
        self.rows.append({"check": check, "status": status, "result": result, **data})
        print(f"[{time.perf_counter() - self.t0:6.1f} s] {check:<9} {status:<4} {result}", flush=True)

    def llmb(self, *args: str, timeout: float | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "llmb", *args]
        self.log.write(f"\n$ llmb {' '.join(args)}\n")
        self.log.flush()
        limit = max(10.0, min(timeout or self.left_s(), self.left_s()))
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=limit, cwd=self.work)
        self.log.write(proc.stdout[-20000:] + proc.stderr[-20000:])
        self.log.flush()
        if check and proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["?"])[-1]
            raise RuntimeError(f"llmb {args[0]} exited {proc.returncode}: {last}")
        return proc

    def train(self, *args: str, timeout: float | None = None) -> dict:
        """``llmb run ... --json``: the summary."""
        proc = self.llmb("run", *args, "--json", timeout=timeout)
        return json.loads(proc.stdout)

    def stage(self, name: str, fn, min_left_s: float = 20.0) -> None:
        if self.left_s() < min_left_s:
            self.row(name, "SKIP", f"time budget: {self.left_s():.0f} s left of {self.budget_s:.0f}")
            return
        t = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # every check reports; none stops the kit
            self.log.write(traceback.format_exc())
            self.row(name, "FAIL", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        finally:
            self.log.write(f"[{name}: {time.perf_counter() - t:.1f} s]\n")

    # -- checks ----------------------------------------------------------------------------
    def env_facts(self) -> None:
        import torch

        smi = shutil.which("nvidia-smi")
        driver = "?"
        if self.device != "cuda":
            self.facts.update(gpu="none (CPU smoke run)", torch=torch.__version__, python=platform.python_version())
            doctor = self.llmb("doctor", "--json", timeout=120)
            self.facts["doctor"] = json.loads(doctor.stdout)
            self.row("env", "ok", f"CPU smoke run: torch {torch.__version__}, Python {platform.python_version()}")
            return
        if smi:
            q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
            driver = q.stdout.strip()
        self.facts.update(
            gpu=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0))),
            nvidia_smi=driver, torch=torch.__version__, cuda=torch.version.cuda,
            nccl=".".join(map(str, torch.cuda.nccl.version())), python=platform.python_version(),
            gpu_memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30,
        )
        doctor = self.llmb("doctor", "--json", timeout=120)
        self.facts["doctor"] = json.loads(doctor.stdout)
        self.row("env", "ok", f"{self.facts['gpu']} ({self.facts['nvidia_smi']}); torch {self.facts['torch']}, "
                 f"CUDA {self.facts['cuda']}, NCCL {self.facts['nccl']}, Python {self.facts['python']}")

    def _time_gemm(self, m: int, n: int, k: int, dtype: str, experts: int = 1) -> float:
        """Median seconds of ``experts`` products of ``m x k`` by ``k x n``, one after another, each
        with its own weights (FP8: ``torch._scaled_mm`` with per-tensor scales and fast
        accumulation, as Transformer Engine runs forward GEMMs)."""
        import torch

        dev = self.device
        gen = torch.Generator(device=dev).manual_seed(0)
        a = [torch.randn(m, k, device=dev, generator=gen, dtype=torch.bfloat16) for _ in range(experts)]
        w = [torch.randn(n, k, device=dev, generator=gen, dtype=torch.bfloat16) for _ in range(experts)]
        if dtype == "fp8":
            a8 = [x.to(torch.float8_e4m3fn) for x in a]
            w8 = [x.to(torch.float8_e4m3fn) for x in w]
            one = torch.ones((), device=dev)

            def fn():
                for x, y in zip(a8, w8):
                    torch._scaled_mm(x, y.t(), one, one, out_dtype=torch.bfloat16, use_fast_accum=True)
        else:
            def fn():
                for x, y in zip(a, w):
                    x @ y.t()
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        for _ in range(3):
            fn()
        sync()
        times = []
        for _ in range(10):
            t = time.perf_counter()
            for _ in range(5):
                fn()
            sync()
            times.append((time.perf_counter() - t) / 5)
        return statistics.median(times)

    def gemm(self) -> None:
        from llmb.catalog import default_catalog
        from llmb.plan.calibrate import stored_efficiency
        from llmb.plan.predict import expert_gemm_share, gemm_share

        catalog = default_catalog()
        name = str(self.facts.get("gpu", "")).upper()
        key = next((g for g in ("h200", "h100", "gb200", "b200", "a100") if g.upper() in name), "h100")
        gpu, eff = catalog.gpu(key), stored_efficiency()
        dtypes = ["bf16", "fp8"] if self.device == "cuda" else ["bf16"]
        scale = 1 if self.device == "cuda" else 16  # the CPU smoke run: every dimension / 16
        shapes, experts = [], []
        for dtype in dtypes:
            peak = gpu.peak_flops(dtype) if self.device == "cuda" else None
            for what, m, n, k in GEMM_SHAPES:
                m, n, k = m // scale, n // scale, k // scale
                s = self._time_gemm(m, n, k, dtype)
                flops = 2 * m * n * k / s
                shapes.append({"shape": what, "dtype": dtype, "m": m, "n": n, "k": k, "seconds": s,
                               "tflops": flops / 1e12, "share": flops / peak if peak else None,
                               "predicted_share": gemm_share(m, n, k, gpu, dtype, eff)})
            for what, e, m, n, k in EXPERT_SHAPES:
                m, n, k = m // scale, n // scale, k // scale
                grouped, dense = self._time_gemm(m, n, k, dtype, experts=e), self._time_gemm(e * m, n, k, dtype)
                flops = 2 * e * m * n * k
                experts.append({"shape": what, "dtype": dtype, "experts": e, "m": m, "n": n, "k": k,
                                "seconds": grouped, "dense_seconds": dense, "tflops": flops / grouped / 1e12,
                                "share": flops / grouped / peak if peak else None,
                                "measured_over_dense": dense / grouped,
                                "predicted_over_dense": expert_gemm_share(m, n, k, gpu, dtype, eff)
                                / gemm_share(e * m, n, k, gpu, dtype, eff)})
        self.facts["gemm_gpu_type"] = key

        def ratio(dtype: str, what: str, ref: str, field: str) -> float:
            by = {r["shape"]: r[field] for r in shapes if r["dtype"] == dtype}
            return by[what] / by[ref]

        parts = [f"{d}: fc1 ETP1/ETP4 {ratio(d, 'grok fc1 ETP1', 'grok fc1 ETP4', 'tflops'):.2f}x "
                 f"(model {ratio(d, 'grok fc1 ETP1', 'grok fc1 ETP4', 'predicted_share'):.2f}x), "
                 f"tokens 512 {ratio(d, 'tokens 512', 'square 8192', 'tflops'):.2f}x square "
                 f"(model {ratio(d, 'tokens 512', 'square 8192', 'predicted_share'):.2f}x)" for d in dtypes]
        parts += [f"{r['dtype']} {r['shape']} at {r['measured_over_dense']:.2f}x one dense GEMM "
                  f"(model {r['predicted_over_dense']:.2f}x)" for r in experts]
        best = max(shapes, key=lambda r: r["tflops"])
        self.row("gemm", "ok", f"{len(shapes) + len(experts)} GEMMs, best {best['tflops']:,.0f} TFLOP/s "
                 f"({best['dtype']} {best['shape']}); " + "; ".join(parts), shapes=shapes, experts=experts, gpu_type=key)

    def _width_run(self, *extra: str) -> tuple[dict, Path]:
        s = self.train("llama3.1", "--size", "8b", "--proxy", self.width_proxy, "--steps", str(self.steps),
                       "--warmup-steps", "5", *extra)
        return s, Path(s["experiment_dir"])

    @staticmethod
    def _steps(exp: Path) -> list[dict]:
        return [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines() if line.strip()]

    def bf16(self) -> None:
        from llmb.plan.memory import estimate_memory
        from llmb.plan.run import RunRequest, resolve_run

        s, exp = self._width_run()
        self.bf16_summary, self.bf16_dir = s, exp
        m = s["metrics"]
        run = resolve_run(RunRequest(proxy=self.width_proxy, nproc=1, steps=self.steps))
        self.model = run.model
        predicted = estimate_memory(run.model, run.derived, run.recipe.gpu, "bf16", "none").peak_allocated_bytes / 2**30
        measured = max(r["peak_mem_gib"] for r in self._steps(exp))
        self.facts["flops_per_sample"] = s["flops_per_sample"]
        self.row("bf16", "ok" if s["status"] == "complete" else "FAIL",
                 f"{m['step_time_s']:.3f} s/step, {m['tokens_per_s']:,.0f} tokens/s, {m['tflops_per_gpu']:.0f} TFLOP/s, "
                 f"MFU {m['mfu']:.1%}; peak allocated {measured:.2f} GiB vs memory model {predicted:.2f} GiB "
                 f"({measured / predicted - 1:+.0%})",
                 mfu=m["mfu"], tokens_per_s=m["tokens_per_s"], step_time_s=m["step_time_s"],
                 peak_allocated_gib=measured, predicted_gib=predicted,
                 memory_within_target=abs(measured / predicted - 1) <= MEMORY_TOLERANCE)

    def compiled(self) -> None:
        s, _ = self._width_run("--compile")
        m, ref = s["metrics"], self.bf16_summary["metrics"]
        self.row("compile", "ok" if s["status"] == "complete" else "FAIL",
                 f"{m['step_time_s']:.3f} s/step, MFU {m['mfu']:.1%}: {m['tokens_per_s'] / ref['tokens_per_s']:.2f}x eager",
                 mfu=m["mfu"], speedup=m["tokens_per_s"] / ref["tokens_per_s"])

    def fp8(self) -> None:
        if self.device != "cuda":
            self.row("fp8", "SKIP", "FP8 needs a CUDA GPU")
            return
        s, exp = self._width_run("--dtype", "fp8")
        m, ref = s["metrics"], self.bf16_summary["metrics"]
        ours = [r["loss"] for r in self._steps(exp)]
        theirs = [r["loss"] for r in self._steps(self.bf16_dir)]
        worst = max(abs(a - b) / abs(b) for a, b in zip(ours, theirs))
        ok = s["status"] == "complete" and worst <= FP8_LOSS_TOLERANCE
        self.row("fp8", "ok" if ok else "FAIL",
                 f"{m['step_time_s']:.3f} s/step: {m['tokens_per_s'] / ref['tokens_per_s']:.2f}x bf16 tokens/s; "
                 f"loss within {worst:.2%} of bf16 at every step (tolerance {FP8_LOSS_TOLERANCE:.0%})",
                 speedup=m["tokens_per_s"] / ref["tokens_per_s"], max_loss_rel_diff=worst)

    def _peer(self, name: str, build) -> None:
        """Train a peer model on the same shape: fp32 weights, bf16 autocast, AdamW, random
        tokens; the median step of the steps after five warm-ups, MFU with llmb's FLOPs."""
        import torch

        torch.manual_seed(0)
        dev = self.device
        model = build().to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), fused=dev == "cuda")
        seq, vocab = self.model.seq_len, self.model.vocab
        batch = self.bf16_summary["layout"]["gbs"]  # the engine's samples per step, in one micro-batch
        tokens = torch.randint(0, vocab, (batch, seq + 1), device=dev)
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        times = []
        for _ in range(self.steps):
            sync()
            t = time.perf_counter()
            with torch.autocast(dev, dtype=torch.bfloat16):
                logits = model(tokens[:, :-1])
                logits = getattr(logits, "logits", logits)
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            times.append(time.perf_counter() - t)
        step = statistics.median(times[5:])
        peak = self.bf16_summary["hardware"]["mfu_denominator"]["flops"]
        mfu = batch * self.facts["flops_per_sample"] / step / peak
        ours = self.bf16_summary["metrics"]["mfu"]
        self.row(name, "ok", f"{step:.3f} s/step, MFU {mfu:.1%}; llmb eager is {ours / mfu:.2f}x its MFU",
                 mfu=mfu, step_time_s=step, llmb_ratio=ours / mfu)
        del model, opt
        if dev == "cuda":
            torch.cuda.empty_cache()

    def hf(self) -> None:
        try:
            import transformers
            from transformers import LlamaConfig, LlamaForCausalLM
        except Exception as exc:
            self.row("hf", "SKIP", f"transformers does not import here: {type(exc).__name__}: {exc}"[:300])
            return
        m = self.model
        cfg = LlamaConfig(hidden_size=m.hidden, intermediate_size=m.ffn_hidden, num_hidden_layers=m.layers,
                          num_attention_heads=m.heads, num_key_value_heads=m.query_groups, vocab_size=m.vocab,
                          max_position_embeddings=m.seq_len, rope_theta=m.rope_theta, attn_implementation="sdpa",
                          tie_word_embeddings=False)
        self.facts["transformers"] = transformers.__version__
        self._peer("hf", lambda: LlamaForCausalLM(cfg))

    def titan(self) -> None:
        try:
            import torchtitan
            from torchtitan.models.llama3.model.args import TransformerModelArgs
            from torchtitan.models.llama3.model.model import Transformer
        except Exception as exc:
            self.row("titan", "SKIP", f"torchtitan does not import here: {type(exc).__name__}: {exc}"[:300])
            return
        self.facts["torchtitan"] = getattr(torchtitan, "__version__", "?")
        m = self.model
        # torchtitan sizes the FFN as multiple_of * ceil(ffn_dim_multiplier * 8/3 * dim / multiple_of):
        # a multiplier of ffn / (8/3 dim) and multiple_of 64 give the proxy's width exactly.
        args = TransformerModelArgs(dim=m.hidden, n_layers=m.layers, n_heads=m.heads, n_kv_heads=m.query_groups,
                                    vocab_size=m.vocab, multiple_of=64,
                                    ffn_dim_multiplier=m.ffn_hidden / (int(2 * 4 * m.hidden / 3)),
                                    rope_theta=m.rope_theta, max_seq_len=m.seq_len)

        def build():
            import torch

            with torch.device("meta"):
                m = Transformer(args)
            m.to_empty(device=self.device)
            m.init_weights()
            return m

        self._peer("titan", build)

    def backend(self) -> None:
        try:
            import torchtitan  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - any import failure is a reason to skip
            self.row("backend", "SKIP", f"torchtitan does not import here: {type(exc).__name__}: {exc}"[:300])
            return
        proc = self.llmb("run", "--backend", "torchtitan", "--proxy", self.width_proxy, "--steps", str(self.steps),
                         "--warmup-steps", "2", "--json")
        res = json.loads(proc.stdout)["result"]
        tps = (res["stats"].get("tokens_per_s_per_gpu") or {}).get("mean")
        ours = self.bf16_summary["metrics"]["tokens_per_s"] / max(1, self.bf16_summary.get("world_size") or 1)
        ok = res["status"] in ("OK", "INCOMPLETE") and tps is not None
        self.row("backend", "ok" if ok else "FAIL",
                 f"torchtitan through llmb: {res['steps_found']} steps ({res['status']}, window {res['window']}), "
                 + (f"{tps:,.0f} tokens/s/GPU = {tps / ours:.2f}x the engine's bf16 run" if tps else "no tokens/s"),
                 tokens_per_s_per_gpu=tps, vs_engine=tps / ours if tps else None)

    def moe_and_nemotron(self) -> None:
        for name, wl in (("moe", "llama4-maverick"), ("nemotron", "nemotron4")):
            s = self.train(wl, "--proxy", self.small_proxy, "--steps", "10", "--warmup-steps", "2")
            self.row(name, "ok" if s["status"] == "complete" else "FAIL",
                     f"{wl} {self.small_proxy} proxy on the {self.device.upper()}: loss {s['first_loss']:.3f} -> {s['final_loss']:.3f}, "
                     f"{s['metrics']['step_time_s']:.3f} s/step")

    def dcp(self) -> None:
        first = self.train("--proxy", self.small_proxy, "--steps", "4", "--save", "--warmup-steps", "1")
        again = self.train("--proxy", self.small_proxy, "--steps", "6", "--load", first["experiment_dir"],
                           "--warmup-steps", "1")
        r = again.get("resumed_from") or {}
        ok = r.get("step") == 4 and again["steps_completed"] == 2
        self.row("dcp", "ok" if ok else "FAIL", f"saved step 4 on the {self.device.upper()}, loaded it, trained steps 5-6 "
                 f"(load {r.get('load_time_s', float('nan')):.2f} s)")

    def profiler(self) -> None:
        s = self.train("--proxy", self.small_proxy, "--steps", "4", "--warmup-steps", "1", "--profile",
                       "--profile-start-step", "2", "--profile-stop-step", "3")
        traces = list(Path(s["experiment_dir"]).glob("profiles/*.json"))
        events = json.loads(traces[0].read_text())["traceEvents"] if traces else []
        kernels = sum(1 for e in events if e.get("cat") == "kernel")
        ok = traces and (kernels or self.device != "cuda")
        self.row("profiler", "ok" if ok else "FAIL",
                 f"{len(traces)} trace(s), {len(events)} events, {kernels} CUDA kernels")

    def nccl(self) -> None:
        import torch
        import torch.distributed as dist

        if self.device != "cuda":
            self.row("nccl", "SKIP", "NCCL needs a CUDA GPU")
            return
        store = dist.HashStore()
        dist.init_process_group("nccl", store=store, rank=0, world_size=1, device_id=torch.device("cuda", 0))
        try:
            x = torch.ones(1 << 20, device="cuda")
            dist.all_reduce(x)
            torch.cuda.synchronize()
            ok = bool(torch.all(x == 1).item())
        finally:
            dist.destroy_process_group()
        self.row("nccl", "ok" if ok else "FAIL", f"NCCL process group at world size 1: all-reduce of 4 MiB on the GPU "
                 f"({'correct' if ok else 'WRONG'})")

    def results(self) -> None:
        parsed = json.loads(self.llmb("parse", str(self.bf16_dir), "--json").stdout)[0]
        step = parsed["metrics"]["step_time_s"]
        want = self.bf16_summary["metrics"]["step_time_s"]
        jobs = json.loads(self.llmb("jobs", "list", "--no-refresh", "--json").stdout)
        report = json.loads(self.llmb("report", "--out", str(self.work / "report"), "--json").stdout)
        ok = math.isclose(step, want, rel_tol=1e-3) and len(jobs) >= 3 and report["plots"]
        for png in report["plots"][:2]:
            shutil.copy(png, self.out / Path(png).name)
        shutil.copy(report["markdown"], self.out / "report.md")
        self.row("results", "ok" if ok else "FAIL", f"parse: {step:.4f} s vs summary {want:.4f} s; {len(jobs)} runs in "
                 f"the store; report with {len(report['plots'])} plot(s)")

    # -- output ----------------------------------------------------------------------------
    def write(self, command: str) -> int:
        failed = [r for r in self.rows if r["status"] == "FAIL"]
        data = {"command": command, "facts": self.facts, "checks": self.rows,
                "wall_s": time.perf_counter() - self.t0, "failed": len(failed)}
        (self.out / "gpu-check.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        lines = [f"# llmb GPU check: {self.facts.get('gpu', '?')}", "", f"`{command}`", "",
                 f"torch {self.facts.get('torch')}, CUDA {self.facts.get('cuda')}, NCCL {self.facts.get('nccl')}, "
                 f"transformers {self.facts.get('transformers', '-')}, torchtitan {self.facts.get('torchtitan', '-')}; "
                 f"{data['wall_s']:.0f} s in all", "", "| check | status | result |", "|---|---|---|"]
        lines += [f"| {r['check']} | {r['status']} | {r['result'].replace('|', '/')} |" for r in self.rows]
        table = "\n".join(lines) + "\n"
        (self.out / "gpu-check.md").write_text(table)
        print("\n" + table, flush=True)
        return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=450.0)
    ap.add_argument("--skip", default="", help="checks to leave out, comma-separated (e.g. compile,titan)")
    # Developers only: the same plumbing on a CPU, with small shapes (no GPU number means anything).
    ap.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("error: the GPU check needs torch, which this Python cannot import", file=sys.stderr)
        return 1
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("error: the GPU check needs a CUDA GPU, and torch sees none here (run it on the GPU machine)",
              file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cpu_smoke:
        kit = Kit(args.out, args.steps, args.budget_s, width_proxy="cpu-tiny", small_proxy="cpu-tiny", device="cpu")
    else:
        kit = Kit(args.out, args.steps, args.budget_s)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()} - {"env", "bf16"}  # every later check needs them
    for name, fn in (("env", kit.env_facts), ("gemm", kit.gemm), ("bf16", kit.bf16)):
        if name in skip:
            kit.row(name, "SKIP", "--skip")
            continue
        kit.stage(name, fn)
    if not hasattr(kit, "bf16_summary"):
        kit.row("rest", "SKIP", "the bf16 run failed: every later check compares with it")
        return kit.write(" ".join(sys.argv))
    for name, fn, need in (("compile", kit.compiled, 150), ("fp8", kit.fp8, 60), ("hf", kit.hf, 40),
                           ("titan", kit.titan, 40), ("backend", kit.backend, 60),
                           ("proxies", kit.moe_and_nemotron, 60), ("dcp", kit.dcp, 40),
                           ("profiler", kit.profiler, 30), ("nccl", kit.nccl, 10), ("results", kit.results, 20)):
        if name in skip:
            kit.row(name, "SKIP", "--skip")
            continue
        kit.stage(name, fn, min_left_s=need)
    return kit.write(" ".join(sys.argv))


if __name__ == "__main__":
    sys.exit(main())
