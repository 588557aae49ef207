"""The llmb training engine: plain PyTorch models, parallelism applied from outside, one
train loop. Importing this package imports nothing; its modules import torch. Planning
(``llmb.plan``: run resolution, proxies, options) and the catalog never import torch.

Map of the package (each concept in the file named after it):

=======================  ====================================================================
``models/``              Llama / Nemotron / Llama 4 MoE transformer (``layers.py``: norms,
                         activations, the dense MLP), seeded per-shard init
``parallel/``            mesh, FSDP2/DDP, TP+SP, PP (+VP), CP, EP; ``build_model_parts``
``data/``                the recipes' mock data and batches over indexed datasets
``optim.py``             AdamW, warm-up + cosine, bf16 master weights, global grad norm
``train.py``             the :class:`~llmb.engine.train.Trainer`: one training step (GA
                         micro-batches or a pipeline schedule); its state dict
``checkpoint.py``        state dicts to and from DCP, atomic publish
``hooks.py``             checkpoints, profiling and health around each step
``recorder.py``          the run's outputs: console, log.txt, metrics.jsonl, TensorBoard
``runner.py``            process group, the timed step loop, summary; the worker's entry
``ceiling.py``           the measured CPU GEMM ceiling (MFU denominator on CPU)
``fp8.py``               torchao float8 on CUDA
=======================  ====================================================================

Start it with ``llmb run`` (default: the llama3.1 8b workload as the ``cpu-small`` proxy,
bf16, one process) or ``llmb run WORKLOAD --nproc N`` (torchrun, gloo on CPU); a launcher
starts each worker as ``python -m llmb.engine.worker EXPERIMENT_DIR``, which executes the run
recorded in the folder's ``config.json``.

Paths that need a GPU exist but have not run on this CPU-only machine: NCCL process groups,
the built-in CUDA context parallelism (``parallel/context.builtin_context``), fp8, and CUDA
timing/memory. The CPU paths are exercised by the tests.
"""
