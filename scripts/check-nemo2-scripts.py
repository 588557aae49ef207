#!/usr/bin/env python3
"""Run every NeMo 2 script llmb generates (the golden files ``tests/golden/backends/nemo2/*.txt``)
with NeMo 2.3.0 itself, the NeMo of the seeds' ``nvcr.io/nvidia/nemo:25.04.01``, short of training.

Usage (a separate environment: NeMo's dependencies are not llmb's)::

    python3 -m venv /tmp/nemo-venv
    /tmp/nemo-venv/bin/pip install torch==2.13.0            # the CPU build on this machine's disk
    printf 'torch==2.13.0\\nnumpy==1.26.4\\ntransformers==4.51.3\\npandas<2.3\\ndatasets<4\\npyarrow<19\\nnemo_run==0.4.0\\n' > /tmp/c.txt
    /tmp/nemo-venv/bin/pip install -c /tmp/c.txt 'nemo_toolkit[core]==2.3.0' 'megatron_core==0.12.*' nemo_run \\
        transformers einops sentencepiece pandas datasets h5py ijson matplotlib sacrebleu rouge_score jieba \\
        opencc pangu==4.0.6.1
    /tmp/nemo-venv/bin/python scripts/check-nemo2-scripts.py

(the package list is what ``from nemo.collections.llm.recipes.<name> import pretrain_recipe``
needed, found by importing until it succeeded; the pins keep NeMo 2.3.0's era: numpy 1, the
transformers 4 tokenizer API, a nemo_run without the Lepton executor.)

For each launch the script's text is executed as a module (its ``if __name__ == '__main__'``
``run.run(recipe, direct=True)`` is not reached), so:

* the imports are NeMo's own, and ``pretrain_recipe(...)`` of the named recipe module builds its
  real ``run.Partial``;
* every ``recipe.<path> = value`` goes through fiddle, which refuses a name the configured class's
  signature does not have (``AttributeError: No parameter named ...``);
* then the model config and the ``MegatronStrategy`` are built (``fdl.build``), the strategy's
  parallelism is set on the model config with NeMo's own ``_strategy_lib.set_model_parallel_attributes``
  (as ``MegatronStrategy.connect`` does at the start of training), which runs Megatron-Core
  0.12's ``TransformerConfig.__post_init__`` again with the layout: its checks of heads, groups,
  experts, pipeline and virtual stages against TP/PP/CP/EP/ETP; and every value the script
  assigned must read back from the built objects as written.

What is not as on the cluster, stated plainly: building a config on a CPU machine without
Transformer Engine or Apex, the fusions that need them are switched off on the model config
before it is built (``apply_rope_fusion``, ``bias_activation_fusion``, ``bias_dropout_fusion``,
``masked_softmax_fusion``, ``gradient_accumulation_fusion``, ``cross_entropy_loss_fusion``;
listed in the output); nothing of the layout or the model's sizes is touched. The trainer and
the data module are configured, not built (they need CUDA devices / a distributed group).

Exit code 1 when NeMo refuses any script or a value reads back differently. Not part of
``make test``: NeMo and its dependencies are not llmb's.
"""

from __future__ import annotations

import ast
import sys
import traceback

import golden_launches  # noqa: E402 - scripts/ is sys.path[0] when run as a script
#: fusions whose kernels come from Transformer Engine or Apex (off for the CPU build only)
NEEDS_TE = ("apply_rope_fusion", "bias_activation_fusion", "bias_dropout_fusion", "masked_softmax_fusion",
            "gradient_accumulation_fusion", "cross_entropy_loss_fusion")


def launches():
    """(file, heading, script text) of every launch (refusals skipped)."""
    for g in golden_launches.launches("nemo2"):
        if "nemo2_pretrain.py" in g.files:
            yield g.path, g.heading, g.files["nemo2_pretrain.py"]


def assigned(text: str) -> dict[str, object]:
    """``recipe.<path>`` -> the literal value the script assigns (non-literals: their source)."""
    out: dict[str, object] = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            t, parts = node.targets[0], []
            while isinstance(t, ast.Attribute):
                parts.append(t.attr)
                t = t.value
            if isinstance(t, ast.Name) and t.id == "recipe":
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    value = ast.unparse(node.value)
                out[".".join(reversed(parts))] = value
    return out


def check(text: str) -> str:
    """A one-line summary; raises on any refusal or mismatch."""
    import fiddle as fdl
    import torch

    namespace = {"__name__": "llmb_check"}
    exec(compile(text, "nemo2_pretrain.py", "exec"), namespace)
    recipe = namespace["recipe"]
    for name in NEEDS_TE:
        setattr(recipe.model.config, name, False)
    from types import SimpleNamespace

    from nemo.lightning import _strategy_lib

    model = fdl.build(recipe.model.config)
    strategy = fdl.build(recipe.trainer.strategy)
    holder = SimpleNamespace(config=model, configure_model=lambda: None)  # what connect() is given
    _strategy_lib.set_model_parallel_attributes(holder, strategy.parallelism)
    built = {"model.config": model, "trainer.strategy": strategy}
    wrong = []
    for path, value in assigned(text).items():
        head, _, attr = path.rpartition(".")
        obj = built.get(head)
        if obj is None:
            continue  # data, optim, log, trainer: configured, checked by fiddle on assignment
        got = getattr(obj, attr)
        if isinstance(value, str) and value.startswith("torch."):
            value = eval(value, {"torch": torch})  # noqa: S307 - an attribute path the script itself wrote
        if got != value:
            wrong.append(f"{path}={value!r} built as {got!r}")
    if wrong:
        raise AssertionError("; ".join(wrong))
    p = strategy
    return (f"{type(model).__name__} {model.num_layers} layers x {model.hidden_size}, "
            f"experts {model.num_moe_experts}; TP{p.tensor_model_parallel_size} PP{p.pipeline_model_parallel_size} "
            f"VP{p.virtual_pipeline_model_parallel_size} CP{p.context_parallel_size} "
            f"EP{p.expert_model_parallel_size} ETP{p.expert_tensor_parallel_size}")


def main() -> int:
    ok = bad = 0
    for path, heading, text in launches():
        where = f"{path.name} {heading}"
        try:
            summary = check(text)
        except Exception as exc:  # fiddle's AttributeError, Megatron-Core's ValueError, a mismatch
            bad += 1
            last = traceback.format_exception_only(type(exc), exc)[-1].strip().splitlines()[0]
            print(f"REFUSED {where}: {last}", flush=True)
            continue
        ok += 1
        print(f"accepted {where}: {summary}", flush=True)
    print(f"{ok} accepted, {bad} refused by NeMo 2.3.0 (fusions needing Transformer Engine off: {', '.join(NEEDS_TE)})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
