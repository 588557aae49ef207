#!/usr/bin/env python3
"""Run MaxText's own config code (``MaxText/pyconfig.py``'s ``initialize``) on every MaxText
launch llmb generates (the golden files ``tests/golden/backends/maxtext/*.txt``), at
AI-Hypercomputer/maxtext ``0fe43b75a285`` (2024-12-09), the commit the seeds' container
``ghcr.io/nvidia/jax:maxtext-2024-12-09`` carries.

Usage::

    mkdir -p /tmp/maxtext-0fe43b7 && git --git-dir=MAXTEXT_MIRROR archive 0fe43b75a285 MaxText \\
        ':(exclude)MaxText/test_assets' | tar -x -C /tmp/maxtext-0fe43b7
    python3 -m venv /tmp/mt-venv && /tmp/mt-venv/bin/pip install jax==0.4.36 jaxlib==0.4.36 \\
        flax==0.10.2 orbax-checkpoint==0.10.2 google-cloud-logging optax==0.2.3 grain==0.2.2 \\
        aqtp==0.8.2 etils==1.10.0 tensorboardX==2.6.2.2 google-cloud-storage==2.18.2 \\
        absl-py==2.1.0 numpy==1.26.4 ml-dtypes==0.4.1 chex==0.1.87 PyYAML
    .venv/bin/python scripts/check-maxtext-config.py /tmp/maxtext-0fe43b7 /tmp/mt-venv/bin/python
    .venv/bin/python scripts/check-maxtext-config.py /tmp/maxtext-0fe43b7 /tmp/mt-venv/bin/python --as-launched
    .venv/bin/python scripts/check-maxtext-config.py ... --as-launched --no-rendezvous   # must refuse

``MaxText/`` is all this needs (the mirror lacks the test-asset blobs, so ``git archive`` of
more fails, and of this prints one "invalid object" line and succeeds). The packages are the
imports of pyconfig, max_utils, checkpointing and layers/*, pinned near the commit's
``constraints_gpu.txt`` (2024-10-25) except: orbax-checkpoint 0.10.2, since its 0.6.4 has no
``ocp.logging.cloud_logger`` that checkpointing.py reads at import (which needs
google-cloud-logging), grain 0.2.2 for grain-nightly 0.0.9 (not on PyPI now), and jax/jaxlib
0.4.36 (early December 2024) for 0.4.35/0.4.34. None is the container's exact build; the code
checked here needs them only to import, apart from jax's device count and ``jnp.dtype``.

This script runs under llmb's environment, which resolves each golden row as
``tests/test_backends.py`` does, and starts one process per launch under the
second interpreter (MaxText's dependencies, jax for CPU), in the checkout's root as the launch's
``/opt/maxtext``, with the launch's environment. That process calls
``pyconfig.initialize(["MaxText/train.py", "MaxText/configs/base.yml", *keys])`` (the launch's
argv after ``python3 -u``), so MaxText refuses any key base.yml lacks, any value it cannot
parse, a model config key passed again, its validate_* checks and its DCN/slice check. Then:

* every key the launch wrote must read back from the config as written;
* the model MaxText ends with (``emb_dim``, ``num_decoder_layers``, heads, ``mlp_dim``,
  ``head_dim``, ``vocab_size``, ...; from ``MaxText/configs/models/<name>.yml`` where the
  launch names one) and ``global_batch_size_to_train_on`` must be the catalog's;
* the ici_*/dcn_* axes must pass ``max_utils.fill_unspecified_mesh_axes`` as train.py's
  ``create_device_mesh`` calls it (ICI product = devices per slice, DCN product = slices);
  the device mesh itself is not built.

What is not as on the cluster, stated plainly:

* ``tensorflow`` is replaced in ``sys.modules`` by an empty module with a placeholder
  ``tf.data.Dataset`` class: ``multihost_dataloading`` (imported by ``max_utils`` via
  ``checkpointing``) uses it only in annotations and at data-loading time, never in pyconfig.
* jax runs on the CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` fake devices,
  N the heading's GPU count; ``hardware=gpu`` is kept as written. The process gets only the
  launch's environment (and PATH, HOME, LANG, LC_ALL, TMPDIR): at this commit ``hardware=gpu``
  makes ``max_utils.initialize_jax_for_gpu`` call ``jax.distributed.initialize`` only when
  ``JAX_COORDINATOR_IP`` is set, which llmb's launch does not set.
* MaxText counts slices as ``1 + max(d.slice_index for d in jax.devices())``; XLA's GPU client
  gives each host (boot id) its own slice_index once ``jax.distributed`` is up, while CPU
  devices have none (MaxText then counts 1). So for a launch of more than one node the check
  appends ``compile_topology_num_slices=<nodes>``, which pyconfig's ``get_num_slices`` returns
  instead (it is read nowhere else on this path: ``compile_topology`` stays empty). Nodes are
  GPUs / GPUs per node (8 for h100, 4 for gb200, as the goldens were rendered).
* ``jax.distributed.initialize`` is replaced by a no-op that records its arguments (MaxText
  calls it for ``hardware=gpu`` when ``JAX_COORDINATOR_IP`` is set): on the cluster it joins the
  job's processes, here there are none to join; the output says when it happened.
* ``--as-launched`` runs each launch first as one node's process sees it under llmb's batch
  script: the node's GPUs as devices, nothing appended, and the variables the script exports
  for the launcher ``node`` (``JAX_COORDINATOR_IP``, ``JAX_COORDINATOR_PORT``, ``NNODES``,
  ``NODE_RANK``; here 127.0.0.1, 29500, the launch's nodes and 0). A launch of more than one
  node must make MaxText call ``jax.distributed.initialize`` with the coordinator, ``NNODES``
  processes and ``NODE_RANK`` (what joins the nodes into one job of several slices), and is
  then checked as the whole job. Without those variables (``--as-launched --no-rendezvous``,
  how llmb launched before 2026-12-02) every multi-node launch fails MaxText's "DCN
  parallelism requested but only one slice available".

Exit code 1 when any launch is refused or reads back wrong. Not part of ``make test``: the
config code is MaxText's (read from a checkout) and needs jax, flax, orbax, aqt and grain.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
import golden_launches  # noqa: E402 - scripts/ is sys.path[0] when run as a script
GPUS_PER_NODE = {"h100": 8, "gb200": 4}  # as tests/test_backends.py renders the goldens
ICI = ("data", "pipeline", "fsdp", "fsdp_transpose", "sequence", "tensor", "expert", "autoregressive")
MODEL = ("decoder_block", "emb_dim", "num_query_heads", "num_kv_heads", "mlp_dim", "num_decoder_layers", "head_dim",
         "vocab_size", "normalization_layer_epsilon", "logits_via_embedding", "rope_max_timescale",
         "max_target_length", "mlp_activations")
READ = (*MODEL, *(f"{p}_{a}_parallelism" for p in ("ici", "dcn") for a in ICI), "per_device_batch_size",
        "gradient_accumulation_steps", "global_batch_size_to_train_on", "micro_batch_size_to_train_on",
        "num_slices", "hardware", "model_name", "dtype", "quantization")


def launches():
    """(file, heading, env, command) of every launch in the golden files (refusals skipped)."""
    for g in golden_launches.launches("maxtext"):
        yield g.path, g.heading, g.env, g.argv


def expected(path: Path, heading: str) -> dict:
    """The catalog's model and global batch for the golden row (resolved as tests/test_backends.py does)."""
    from llmb.plan.request import RunRequest
    from llmb.plan.run import resolve_run

    workload, size = path.stem.rsplit("_", 1)
    gpus, _, gpu_type, dtype = heading.split()
    run = resolve_run(RunRequest(workload=workload, size=size, dtype=dtype, proxy=None, gpus=int(gpus),
                                 gpu_type=gpu_type), check_files=False)
    m = run.model
    return {
        "decoder_block": "llama2", "emb_dim": m.hidden, "num_query_heads": m.heads, "num_kv_heads": m.query_groups,
        "mlp_dim": m.ffn_hidden, "num_decoder_layers": m.layers, "head_dim": m.kv_channels, "vocab_size": m.vocab,
        "normalization_layer_epsilon": m.norm_eps, "logits_via_embedding": m.tied_embeddings,
        "rope_max_timescale": int(m.rope_theta), "max_target_length": m.seq_len,
        "mlp_activations": ["silu", "linear"] if m.activation == "swiglu" else m.activation,
        "global_batch_size_to_train_on": run.layout.gbs,
    }


def run_child(python: str, checkout: Path, env: dict, argv: list[str], devices: int, added: list[str]) -> dict:
    """One launch under MaxText's interpreter, with ``devices`` fake CPU devices; its JSON answer."""
    child_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    child_env.update(env)  # the launch's own environment (pyconfig also reads M_* variables)
    child_env.update({"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
                      "TF_CPP_MIN_LOG_LEVEL": "3"})
    request = {"checkout": str(checkout), "argv": argv, "added": added, "devices": devices}
    proc = subprocess.run([python, __file__, "--child"], input=json.dumps(request), capture_output=True,
                          text=True, cwd=checkout, env=child_env)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"failed": f"the check's process exited {proc.returncode}: {last}"}


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        return child()
    args = [a for a in sys.argv[1:] if a not in ("--as-launched", "--no-rendezvous")]
    as_launched = "--as-launched" in sys.argv[1:]
    rendezvous = "--no-rendezvous" not in sys.argv[1:]
    if len(args) != 2:
        print(__doc__)
        return 2
    checkout, python = Path(args[0]).resolve(), args[1]
    sys.path.insert(0, str(ROOT / "src"))
    mode = ("as launched" + ("" if rendezvous else ", no rendezvous variables")) if as_launched else "whole job"
    ok = bad = 0
    for path, heading, env, command in launches():
        gpus, gpu_type = int(heading.split()[0]), heading.split()[2]
        nodes = max(1, gpus // GPUS_PER_NODE[gpu_type])
        argv = command[2:]  # sys.argv of train.py: MaxText/train.py MaxText/configs/base.yml key=value ...
        whole = ([f"compile_topology_num_slices={nodes}"] if nodes > 1 else [])
        devices, slices, added = gpus, nodes, whole
        result, joined = None, None
        if as_launched:  # one node's process; the whole job only if MaxText starts jax.distributed
            node_env = dict(env)
            if rendezvous:  # what llmb's batch script exports for the launcher "node" (sbatch.render)
                node_env.update(JAX_COORDINATOR_IP="127.0.0.1", JAX_COORDINATOR_PORT="29500", NNODES=str(nodes),
                                NODE_RANK="0")
            result = run_child(python, checkout, node_env, argv, gpus // nodes, [])
            calls = result.get("distributed") or []
            want = {"coordinator_address": "127.0.0.1:29500", "num_processes": nodes, "process_id": 0}
            if calls and calls[0] != want:
                result = {"failed": f"MaxText called jax.distributed.initialize({calls[0]}), expected {want}"}
            elif calls:
                result, joined = None, calls[0]
            else:
                devices, slices, added = gpus // nodes, 1, []
        if result is None:
            result = run_child(python, checkout, env, argv, devices, added)
        where = f"{path.name} {heading}"
        if "failed" in result:
            bad += 1
            print(f"FAILED {where}: {result['failed']}", flush=True)
            continue
        if "error" in result:
            bad += 1
            print(f"REFUSED {where} ({devices} devices): {result['error']} ({result['at']})", flush=True)
            continue
        cfg, problems = result["config"], list(result["mismatches"])
        want = expected(path, heading)
        for key, value in want.items():
            if cfg[key] != value:
                problems.append(f"{key}: MaxText has {cfg[key]!r}, the catalog {value!r}")
        if cfg["num_slices"] != slices:
            problems.append(f"num_slices: MaxText has {cfg['num_slices']}, expected {slices}")
        if problems:
            bad += 1
            print(f"MISMATCH {where}: " + "; ".join(problems), flush=True)
            continue
        ok += 1
        ici = "x".join(str(cfg[f"ici_{a}_parallelism"]) for a in ("data", "fsdp", "tensor", "pipeline"))
        dcn = "x".join(str(cfg[f"dcn_{a}_parallelism"]) for a in ("data", "fsdp", "tensor", "pipeline"))
        notes = ([f"check appended {' '.join(added)}"] if added else []) + (
            [f"one node's process joins the job: jax.distributed.initialize({joined}) (stubbed)"] if joined else [])
        print(f"accepted {where}: {devices} devices, {cfg['num_slices']} slice(s), ici dp x fsdp x tp x pp {ici}, "
              f"dcn {dcn}, per_device_batch_size {cfg['per_device_batch_size']:g} x GA "
              f"{cfg['gradient_accumulation_steps']} -> GBS {cfg['global_batch_size_to_train_on']}, "
              f"{cfg['num_decoder_layers']} layers x {cfg['emb_dim']} ({cfg['model_name']})"
              + (f" [{'; '.join(notes)}]" if notes else ""), flush=True)
    print(f"{ok} accepted, {bad} refused by MaxText 0fe43b75a285 pyconfig ({mode})")
    return 1 if bad else 0


def child() -> int:
    """One launch, in MaxText's environment: pyconfig.initialize, then the read-back, as JSON on stdout."""
    import contextlib
    import io
    import traceback
    import types

    req = json.loads(sys.stdin.read())
    sys.path.insert(0, os.path.join(req["checkout"], "MaxText"))  # train.py's own directory, as `python3 MaxText/train.py`
    tf = types.ModuleType("tensorflow")  # stub: see the module docstring
    tf.data = types.SimpleNamespace(Dataset=type("Dataset", (), {}))
    sys.modules["tensorflow"] = tf
    log = io.StringIO()
    calls = []
    try:
        with contextlib.redirect_stdout(log):
            import jax
            import max_utils
            import pyconfig

            jax.distributed.initialize = lambda *args, **kwargs: calls.append(kwargs)  # stub: see the docstring
            assert len(jax.devices()) == req["devices"], (len(jax.devices()), req["devices"])
            pyconfig.initialize(req["argv"] + req["added"])
            keys = pyconfig.config.get_keys()
            ici = [keys[f"ici_{a}_parallelism"] for a in ICI]
            dcn = [keys[f"dcn_{a}_parallelism"] for a in ICI]
            # train.py's create_device_mesh: these checks, before it builds the mesh
            max_utils.fill_unspecified_mesh_axes(ici, req["devices"] // keys["num_slices"], "ICI")
            if keys["num_slices"] > 1:
                max_utils.fill_unspecified_mesh_axes(dcn, keys["num_slices"], "DCN")
    except Exception as exc:  # pyconfig's ValueError / AssertionError
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "MaxText" in f.filename]
        at = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        print(json.dumps({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}", "at": at,
                          "distributed": calls}))
        return 0
    mismatches = []
    for arg in req["argv"][2:]:
        key, written = arg.split("=", 1)
        value = keys[key]
        if isinstance(value, bool):
            same = str(value).lower() == written.lower()
        elif isinstance(value, (int, float)):
            same = math.isclose(value, float(written), rel_tol=0, abs_tol=0)
        else:
            same = str(value) == written  # str, or dtype: jnp.dtype("bfloat16") reads "bfloat16"
        if not same:
            mismatches.append(f"{key}={written} reads back as {value!r}")

    def plain(v):
        return v if isinstance(v, (bool, int, float, str, type(None))) else list(v) if isinstance(v, (list, tuple)) \
            else str(v)

    print(json.dumps({"config": {k: plain(keys[k]) for k in READ}, "mismatches": mismatches,
                      "distributed": calls}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
