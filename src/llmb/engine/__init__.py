"""The llmb training engine: plain PyTorch models, parallelism applied from outside, one
train loop. Importing this package imports torch; ``llmb.plan`` and ``llmb.catalog`` do not.

Map of the package (each concept in the file named after it):

=======================  ====================================================================
``models/``              Llama / Nemotron / Llama 4 MoE transformer, seeded per-shard init
``proxies.yaml``         CPU shrinks of any workload (data), ``proxy.py`` applies them
``config.py``            a run request -> :class:`~llmb.engine.config.ResolvedRun` (no torch)
``parallel/``            mesh, FSDP2/DDP, TP+SP, PP (+VP), CP, EP; ``build_model_parts``
``data/synthetic.py``    the recipes' mock data; any iterator of (tokens, labels) plugs in
``optim.py``             AdamW, warm-up + cosine, bf16 master weights, global grad norm
``train.py``             one training step (GA micro-batches or a pipeline schedule)
``runner.py``            process group, timing, step lines, metrics.jsonl, TensorBoard, summary
``ceiling.py``           the measured CPU GEMM ceiling (MFU denominator on CPU)
``fp8.py``               torchao float8 on CUDA (untested here: no GPU)
=======================  ====================================================================

Run it with ``llmb run`` (default: the llama3.1 8b workload as the ``cpu-small`` proxy, bf16,
one process) or ``llmb run WORKLOAD --nproc N`` (torchrun, gloo on CPU).

Paths that need a GPU exist but have not run on this CPU-only machine: NCCL process groups,
the built-in CUDA context parallelism (``parallel/context.builtin_context``), fp8, and CUDA
timing/memory. The CPU paths are exercised by the tests.
"""
