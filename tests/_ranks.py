"""Start a test's gloo ranks quickly (a helper module, not a test module).

``spawn`` starts fresh interpreters: each rank re-imports torch, its distributed packages and
the engine, some 5 s per rank on a 2-core machine, more than most parity cases then compute.
``start_ranks`` forks the ranks from one server process that imported those once for the whole
session. The server has run no torch op, so no thread pool is forked; each rank takes the
calling test's environment (the server was started under an earlier test's).
"""

from __future__ import annotations

import os

import torch.multiprocessing as mp

PRELOAD = ["torch", "torch.distributed.tensor", "torch.distributed.pipelining", "torch.distributed.checkpoint",
           "llmb.plan.run", "llmb.engine.parallel", "llmb.engine.train", "llmb.engine.checkpoint"]


def _in_env(rank: int, env: dict, fn, args: tuple) -> None:
    os.environ.clear()
    os.environ.update(env)
    fn(rank, *args)


def start_ranks(fn, args: tuple, nprocs: int) -> None:
    """``fn(rank, *args)`` in ``nprocs`` processes, as ``torch.multiprocessing.spawn`` does
    (a rank's exception is raised here); ``fn`` must be importable (a module-level function)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([*PRELOAD, fn.__module__])
    mp.start_processes(_in_env, args=(dict(os.environ), fn, args), nprocs=nprocs, start_method="forkserver")
