#!/usr/bin/env python3
"""Run Megatron-LM's own argument parsing and validation on every Megatron-LM launch llmb
generates (the golden files ``tests/golden/backends/megatron/*.txt``).

Usage::

    git -C MEGATRON_LM_MIRROR archive core_r0.12.0 megatron | tar -x -C /tmp/mlm   # the seeds' pin
    pip install --target /tmp/mlm-deps six                                          # what it imports beyond llmb's env
    .venv/bin/python scripts/check-megatron-args.py /tmp/mlm [/tmp/mlm-deps]

For each launch it sets the launch's environment (``CUDA_DEVICE_MAX_CONNECTIONS=1``), calls
``megatron.training.arguments.parse_args`` on the argv (unknown flags are errors) and then
``validate_args`` with the launch's world size. On a machine without a GPU,
``torch.cuda.get_device_properties`` is answered as an H100's (major 9), which is what
``validate_args`` asks the first GPU for. Exit code 1 when any launch is refused.

This is not part of ``make test``: Megatron-LM's training package is not on PyPI (the
megatron-core wheel has only ``megatron.core``), so it needs a checkout.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import golden_launches  # noqa: E402 - scripts/ is sys.path[0] when run as a script


def launches():
    """(file, heading, env, argv) of every launch in the golden files (refusals skipped)."""
    for g in golden_launches.launches("megatron"):
        yield g.path.name, g.heading, g.env, g.argv


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    sys.path.insert(0, sys.argv[1])
    sys.path.extend(sys.argv[2:])
    import torch

    if not torch.cuda.is_available():
        torch.cuda.get_device_properties = lambda device=None: SimpleNamespace(major=9, minor=0)  # an H100
        torch.cuda.get_device_capability = lambda device=None: (9, 0)
    from megatron.training import arguments

    ok, bad = 0, 0
    for name, heading, env, argv in launches():
        os.environ.update(env)
        sys.argv = [argv[0], *argv[1:]]
        try:
            args = arguments.parse_args(ignore_unknown_args=False)
            args.world_size, args.rank = int(heading.split(" x ")[0]), 0
            arguments.validate_args(args, {})
        except (SystemExit, Exception) as exc:  # argparse exits; validate_args asserts
            bad += 1
            print(f"REFUSED {name} {heading}: {type(exc).__name__}: {exc}", flush=True)
            continue
        ok += 1
        print(f"accepted {name} {heading}: TP{args.tensor_model_parallel_size} PP{args.pipeline_model_parallel_size} "
              f"VP{args.virtual_pipeline_model_parallel_size} CP{args.context_parallel_size} DP{args.data_parallel_size}",
              flush=True)
    print(f"{ok} accepted, {bad} refused by Megatron-LM's parse_args + validate_args")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
