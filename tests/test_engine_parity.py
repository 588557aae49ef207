"""Parallel layouts reproduce one process's per-step losses (fp32, fixed seed, gloo on CPU).

Each case trains the cpu-tiny proxy for STEPS steps on 2 (or 4) processes and compares every
step's loss with a single process training the same global batches to 1e-5 relative. The
global gradient norms are compared too: AdamW hides a wrongly scaled gradient from the losses
(e.g. a missing SUM over ranks), the norm does not.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile

import pytest
from _ranks import start_ranks

STEPS = 6
REL_TOL = 1e-5
BATCH = {"mbs": 2, "gbs": 8}  # same global batch on every layout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(workload: str, nproc: int, overrides: dict, dp_mode: str = "fsdp") -> list[float]:
    """Per-step losses, then per-step gradient norms (one list of 2 * STEPS numbers)."""
    import torch

    from llmb.plan.run import RunRequest, resolve_run
    from llmb.engine.parallel import build_parallel
    from llmb.engine.train import Trainer

    run = resolve_run(RunRequest(
        workload=workload, proxy="cpu-tiny", dtype="fp32", nproc=nproc, steps=STEPS,
        overrides={**BATCH, **overrides}, dp_mode=dp_mode,
    ))
    par = build_parallel(run.parallel_dims)
    trainer = Trainer(run, par, torch.device("cpu"))
    results = [trainer.step() for _ in range(STEPS)]
    return [r.loss for r in results] + [r.grad_norm for r in results]


def _gloo_worker(rank, nproc, port, out_dir, fn, args):
    """One rank of a gloo group: ``fn(*args)``, its repr written to ``rank<N>.txt``."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=nproc)
    try:
        value = fn(*args)
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
            f.write(repr(value))
        dist.barrier()  # no rank tears down gloo while a peer still talks to it
    finally:
        dist.destroy_process_group()


def _on_ranks(nproc: int, fn, *args) -> list:
    """``fn(*args)`` on every rank of a fresh gloo group of ``nproc`` processes; each rank's result."""
    with tempfile.TemporaryDirectory() as out:
        start_ranks(_gloo_worker, (nproc, _free_port(), out, fn, args), nproc)
        floats = {"nan": math.nan, "inf": math.inf}  # what repr() of a diverged loss prints
        return [eval(open(os.path.join(out, f"rank{r}.txt")).read(), floats) for r in range(nproc)]


def _distributed_losses(workload, nproc, overrides, dp_mode="fsdp") -> list[list[float]]:
    return _on_ranks(nproc, _losses, workload, nproc, overrides, dp_mode)


_REFERENCE: dict[str, list[float]] = {}


def _reference(workload: str) -> list[float]:
    if workload not in _REFERENCE:
        _REFERENCE[workload] = _losses(workload, 1, {})
    return _REFERENCE[workload]


CASES = [
    # id, workload, nproc, layout overrides, data-parallel mode
    ("dp2-fsdp", "llama3.1", 2, {"cp": 1}, "fsdp"),
    ("dp2-ddp", "llama3.1", 2, {"cp": 1}, "ddp"),
    ("tp2-sp", "llama3.1", 2, {"cp": 1, "tp": 2}, "fsdp"),
    ("pp2-1f1b", "nemotron4", 2, {"pp": 2}, "fsdp"),
    ("pp2-vp2-interleaved", "nemotron4", 2, {"pp": 2, "vp": 2}, "fsdp"),
    ("cp2", "llama3.1", 2, {"cp": 2}, "fsdp"),
    ("ep2-dp2", "llama4-maverick", 2, {"pp": 1, "ep": 2}, "fsdp"),
    ("tp2-dp2-2d", "llama3.1", 4, {"cp": 1, "tp": 2}, "fsdp"),
    ("pp2-vp2-ep2-dp2", "llama4-maverick", 4, {"pp": 2, "vp": 2, "ep": 2}, "fsdp"),
    ("tp2-pp2-vp2", "nemotron4", 4, {"tp": 2, "pp": 2, "vp": 2}, "fsdp"),
    # MoE under tensor parallelism: experts split over TP (ETP = TP) and over the TP ranks'
    # different tokens (ETP = 1: EP folded into TP, as Megatron-Core does).
    ("tp2-etp2", "llama4-maverick", 2, {"pp": 1, "tp": 2, "etp": 2, "ep": 1}, "fsdp"),
    ("tp2-etp1-ep2", "llama4-maverick", 2, {"pp": 1, "tp": 2, "etp": 1, "ep": 2}, "fsdp"),
    ("tp2-etp2-ep2-dp2", "llama4-maverick", 4, {"pp": 1, "tp": 2, "etp": 2, "ep": 2}, "fsdp"),
    ("pp2-tp2-etp2", "llama4-maverick", 4, {"pp": 2, "vp": 1, "tp": 2, "etp": 2, "ep": 1}, "fsdp"),
    # The architecture variants under the layouts that touch them: Nemotron-4's partial RoPE and
    # zero-centred LayerNorm and Llama 4's NoPE layer (layer 3 of the proxy's 4) and input-side
    # gating under CP (rotary tables indexed by the rank's positions) and TP (heads split).
    # Llama 3.1's RoPE scaling runs in every llama3.1 case above.
    ("cp2-nemotron", "nemotron4", 2, {"pp": 1, "cp": 2}, "fsdp"),
    ("tp2-nemotron", "nemotron4", 2, {"pp": 1, "tp": 2}, "fsdp"),
    ("cp2-ep2-llama4", "llama4-maverick", 2, {"pp": 1, "cp": 2, "ep": 2}, "fsdp"),
    # Grok-1 (softmax top-2 of 8 experts, renormalised; GeGLU; soft-capped scores; sandwich
    # norms; embedding and logit multipliers) under EP, TP with ETP = TP and ETP = 1, CP (the
    # soft-capped scores against gathered keys) and PP (multipliers on the first / last stage).
    ("ep2-dp2-grok", "grok1", 2, {"pp": 1, "tp": 1, "etp": 1, "cp": 1, "ep": 2}, "fsdp"),
    ("tp2-etp2-grok", "grok1", 2, {"pp": 1, "tp": 2, "etp": 2, "ep": 1, "cp": 1}, "fsdp"),
    ("tp2-etp1-ep2-grok", "grok1", 2, {"pp": 1, "tp": 2, "etp": 1, "ep": 2, "cp": 1}, "fsdp"),
    ("cp2-grok", "grok1", 2, {"pp": 1, "tp": 1, "cp": 2, "ep": 1}, "fsdp"),
    ("pp2-grok", "grok1", 2, {"pp": 2, "vp": 1, "tp": 1, "etp": 1, "cp": 1, "ep": 1}, "fsdp"),
    ("tp2-etp2-ep2-dp2-grok", "grok1", 4, {"pp": 1, "tp": 2, "etp": 2, "ep": 2, "cp": 1}, "fsdp"),
]


@pytest.mark.slow
@pytest.mark.parametrize("workload,nproc,overrides,dp_mode", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_layout_matches_one_process(workload, nproc, overrides, dp_mode):
    ref = _reference(workload)
    per_rank = _distributed_losses(workload, nproc, overrides, dp_mode)
    worst = [0.0, 0.0]
    for rank, values in enumerate(per_rank):
        assert len(values) == 2 * STEPS
        for i, (got, want) in enumerate(zip(values, ref)):
            worst[i >= STEPS] = max(worst[i >= STEPS], abs(got - want) / abs(want))
            what = "loss" if i < STEPS else "grad norm"
            assert abs(got - want) <= REL_TOL * abs(want), (
                f"rank {rank} step {i % STEPS + 1} {what}: {got!r} vs one process {want!r}"
            )
    print(f"max rel diff vs one process: loss {worst[0]:.1e}, grad norm {worst[1]:.1e}")
    # The run must actually learn something for the comparison to mean anything.
    assert ref[0] != ref[STEPS - 1]


def _bf16_tp_dtypes(nproc):
    import warnings

    import torch
    from torch.distributed.tensor import DTensor

    from llmb.engine.parallel import build_parallel
    from llmb.engine.train import Trainer
    from llmb.plan.run import RunRequest, resolve_run

    run = resolve_run(RunRequest(workload="llama3.1", proxy="cpu-tiny", dtype="bf16", nproc=nproc, steps=2,
                                 overrides={"cp": 1, "tp": 2, "mbs": 2, "gbs": 4}))
    trainer = Trainer(run, build_parallel(run.parallel_dims), torch.device("cpu"))
    dtypes = {str((p.to_local() if isinstance(p, DTensor) else p).dtype)
              for m in trainer.parts.modules for p in m.parameters()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.step()
    return sorted(dtypes), [str(w.message) for w in caught if "Mismatch dtype" in str(w.message)]


@pytest.mark.slow
def test_bf16_tensor_parallel_weights_are_bf16_shards():
    """bf16 without FSDP casts the model's weights; a DTensor's local shard must be cast too
    (``p.data = ...`` changed only the wrapper's dtype: the TP run computed in fp32 and the
    fused RMSNorm warned about an fp32 input with a "bf16" weight)."""
    for r, (dtypes, mismatch) in enumerate(_on_ranks(2, _bf16_tp_dtypes, 2)):
        assert dtypes == ["torch.bfloat16"] and mismatch == [], (r, dtypes, mismatch)


# -- --init-from hf:DIR in every kind of layout ---------------------------------------------------

INIT_CASES = [
    ("dp2-fsdp", "llama3.1", {"cp": 1}),
    ("tp2", "llama3.1", {"cp": 1, "tp": 2}),
    ("cp2", "nemotron4", {"pp": 1, "cp": 2}),
    ("pp2", "nemotron4", {"pp": 2}),
    ("ep2-dp2", "llama4-maverick", {"pp": 1, "ep": 2}),
    ("tp2-etp2", "llama4-maverick", {"pp": 1, "tp": 2, "etp": 2, "ep": 1}),
]


def _hf_dir(workload: str, root: str) -> str:
    """A transformers checkpoint of the workload's cpu-tiny proxy, with other weights than any
    run's own seeded initialization."""
    import torch

    from llmb.engine.hf import export_hf
    from llmb.engine.models.transformer import build_model
    from llmb.plan.run import RunRequest, resolve_run

    spec = resolve_run(RunRequest(workload=workload, proxy="cpu-tiny", dtype="fp32", nproc=1)).model
    model = build_model(spec, "cpu")
    model.init_weights(seed=4321)
    weights = {n: p.detach() for n, p in model.named_parameters()}
    out = os.path.join(root, workload)
    export_hf(spec, lambda names: {n: weights[n] for n in names}, list(weights), __import__("pathlib").Path(out),
              torch.float32)
    return out


def _init_losses(workload, nproc, overrides, hf_dir):
    """(first-step loss, weights this rank read, weights in the model)."""
    import torch

    from llmb.engine.hooks import RunHooks
    from llmb.engine.parallel import build_parallel
    from llmb.engine.train import Trainer
    from llmb.plan.options import RunOptions
    from llmb.plan.run import RunRequest, resolve_run

    run = resolve_run(RunRequest(workload=workload, proxy="cpu-tiny", dtype="fp32", nproc=nproc, steps=2,
                                 overrides={**BATCH, **overrides}, options=RunOptions(init_from=f"hf:{hf_dir}")))
    trainer = Trainer(run, build_parallel(run.parallel_dims), torch.device("cpu"))
    hooks = RunHooks(run, trainer, None, trainer.par.rank, torch.device("cpu"), log=lambda _: None)
    hooks.start()
    loss = trainer.step().loss
    from llmb.plan.shapes import param_count

    return [loss, hooks.initialized_from.elements_read, param_count(run.model).total]


@pytest.mark.slow
@pytest.mark.parametrize("workload,overrides", [c[1:] for c in INIT_CASES], ids=[c[0] for c in INIT_CASES])
def test_init_from_hf_loads_every_layout(workload, overrides, tmp_path):
    """Each rank reads only the slices its shards hold, and the first step's loss (before any
    update) equals one process's from the same checkpoint, not the seeded initialization's."""
    hf_dir = _hf_dir(workload, str(tmp_path))
    one_loss, one_read, total = _init_losses(workload, 1, {}, hf_dir)
    assert one_read == total and abs(one_loss - _reference(workload)[0]) > 1e-3
    for r, (loss, read, _) in enumerate(_on_ranks(2, _init_losses, workload, 2, overrides, hf_dir)):
        print(f"{workload} {overrides} rank {r}: read {read / total:.2f} of the weights, "
              f"loss rel diff {abs(loss - one_loss) / one_loss:.1e}")
        assert abs(loss - one_loss) <= REL_TOL * one_loss, (r, loss, one_loss)
        assert read <= 0.55 * total, (r, read, total)
