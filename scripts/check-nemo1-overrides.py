#!/usr/bin/env python3
"""Compose NeMo 1's own config with every set of Hydra overrides llmb generates (the golden files
``tests/golden/backends/nemo1/*.txt``), the way ``megatron_gpt_pretraining.py``'s
``@hydra_runner(config_path="conf", config_name="megatron_gpt_config")`` does.

Usage::

    mkdir -p /tmp/nemo1-conf && git -C NEMO_MIRROR show \\
        v2.0.0:examples/nlp/language_modeling/conf/megatron_gpt_config.yaml > /tmp/nemo1-conf/megatron_gpt_config.yaml
    pip install --target /tmp/hydra-deps hydra-core
    .venv/bin/python scripts/check-nemo1-overrides.py /tmp/nemo1-conf /tmp/hydra-deps

Hydra refuses an override of a key the config lacks (unless appended with ``+``), appending a
key it has, and any value its override grammar cannot parse. Each composed config is also
read back: the parallel sizes and model widths must be the ones llmb wrote. Exit code 1 when
any is refused. Not part of ``make test``: the config file is NeMo's (read from a checkout).
"""

from __future__ import annotations

import sys
from pathlib import Path

import golden_launches  # noqa: E402 - scripts/ is sys.path[0] when run as a script


def launches():
    for g in golden_launches.launches("nemo1"):
        yield g.path.name, g.heading, g.argv[3:]


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    conf = Path(sys.argv[1]).resolve()
    sys.path[:0] = sys.argv[2:]
    from hydra import compose, initialize_config_dir

    ok = bad = 0
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        for name, heading, overrides in launches():
            try:
                cfg = compose(config_name="megatron_gpt_config", overrides=overrides)
            except Exception as exc:  # Hydra's ConfigCompositionException, OverrideParseException
                bad += 1
                print(f"REFUSED {name} {heading}: {type(exc).__name__}: {exc}", flush=True)
                continue
            given = dict(o.lstrip("+").split("=", 1) for o in overrides)
            for key in ("model.tensor_model_parallel_size", "model.pipeline_model_parallel_size",
                        "model.virtual_pipeline_model_parallel_size", "model.num_layers", "model.hidden_size",
                        "model.ffn_hidden_size", "model.global_batch_size", "trainer.num_nodes"):
                node = cfg
                for part in key.split("."):
                    node = node[part]
                assert ("null" if node is None else str(node)) == given[key], (key, node, given[key])
            moe = {k: v for k, v in given.items() if k.startswith("model.") and "moe" in k}
            for key, value in moe.items():  # the appended MoE keys land in the model's config
                assert str(cfg.model[key.split(".", 1)[1]]).lower() == value.lower(), (key, value)
            ok += 1
            print(f"accepted {name} {heading}: TP{cfg.model.tensor_model_parallel_size} "
                  f"PP{cfg.model.pipeline_model_parallel_size} VP{cfg.model.virtual_pipeline_model_parallel_size} "
                  f"GBS{cfg.model.global_batch_size} nodes {cfg.trainer.num_nodes}", flush=True)
    print(f"{ok} accepted, {bad} refused by Hydra composing megatron_gpt_config")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
