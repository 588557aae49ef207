#!/usr/bin/env python3
"""Extract, from the frameworks' own sources, the option names llmb's backends must use, into
``tests/golden/frameworks/*.json`` (checked in; ``tests/test_backends.py`` reads them).

Each output records the repository, file and commit it was read from. Run it with git mirrors
of the frameworks (e.g. the ``fetch`` tool's ``/work/.mirror/<owner>+<name>/repo``)::

    scripts/extract-framework-options.py --megatron M --nemo N --maxtext X [--out tests/golden/frameworks]

What is extracted (by reading the code with ``ast``/YAML, nothing of theirs is copied):

* Megatron-LM ``megatron/training/arguments.py`` @ ``core_r0.12.0``: every ``add_argument``
  option string, whether it takes a value, its ``choices``; and the fields of
  ``megatron/core/transformer/transformer_config.py`` + ``model_parallel_config.py`` and
  ``megatron/core/optimizer/optimizer_config.py``.
* MaxText ``MaxText/configs/base.yml`` @ ``0fe43b75a285`` (2024-12-09): its keys and value types.
* NeMo ``examples/nlp/language_modeling/conf/megatron_gpt_config.yaml`` @ ``v2.0.0``: its keys,
  dotted; and @ ``v2.3.0``: the recipe modules with a ``pretrain_recipe``, the ``__init__``
  parameters of the classes the NeMo 2 script configures, the names its imports need, and every
  ``recipe.<path> = ...`` attribute path NeMo's own recipes and performance scripts assign.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

import yaml

MEGATRON_REF = "core_r0.12.0"
MAXTEXT_REF = "0fe43b75a285"
NEMO1_REF = "v2.0.0"
#: MaxText's own model configs of the recipes llmb's maxtext backend expresses
MAXTEXT_MODELS = ["llama2-70b"]
NEMO2_REF = "v2.3.0"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def show(repo: Path, ref: str, path: str) -> str:
    return git(repo, "show", f"{ref}:{path}")


def commit_of(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", f"{ref}^{{commit}}").strip()


def _literal(node):
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return None


def argparse_options(source: str) -> dict[str, dict[str, object]]:
    """``--flag`` -> {takes_value, choices} for every ``*.add_argument('--flag', ...)``."""
    out: dict[str, dict[str, object]] = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"):
            continue
        names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        action = _literal(kw["action"]) if "action" in kw else None
        takes_value = action not in ("store_true", "store_false", "store_const", "count")
        choices = _literal(kw["choices"]) if "choices" in kw else None
        for name in names:
            if name.startswith("-"):
                out[name] = {"takes_value": takes_value,
                             "choices": list(choices) if isinstance(choices, (list, tuple)) else None}
    return dict(sorted(out.items()))


def dataclass_fields(source: str, class_name: str) -> list[str]:
    """Annotated class-level fields of ``class_name`` (a dataclass)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return sorted(s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name))
    raise SystemExit(f"no class {class_name}")


def init_params(source: str, class_name: str) -> list[str]:
    """Parameter names of ``class_name.__init__`` (or its dataclass fields when it has none)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    a = item.args
                    return [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg != "self"]
            return dataclass_fields(source, class_name)
    raise SystemExit(f"no class {class_name}")


def function_params(source: str, name: str) -> list[str] | None:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            a = node.args
            return [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    return None


def top_level_names(source: str) -> list[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return sorted(names)


def recipe_paths(source: str) -> set[str]:
    """Attribute paths assigned below a name ``recipe`` (``recipe.trainer.max_steps = ...``)."""
    found = set()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return found
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        for t in targets:
            parts = []
            while isinstance(t, ast.Attribute):
                parts.append(t.attr)
                t = t.value
            if isinstance(t, ast.Name) and t.id == "recipe" and parts:
                found.add(".".join(reversed(parts)))
    return found


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = type(v).__name__
    return out


def megatron(repo: Path) -> dict:
    ref = MEGATRON_REF
    tc = show(repo, ref, "megatron/core/transformer/transformer_config.py")
    mpc = show(repo, ref, "megatron/core/model_parallel_config.py")
    opt = show(repo, ref, "megatron/core/optimizer/optimizer_config.py")
    return {
        "repository": "NVIDIA/Megatron-LM", "ref": ref, "commit": commit_of(repo, ref),
        "files": ["megatron/training/arguments.py", "megatron/core/transformer/transformer_config.py",
                  "megatron/core/model_parallel_config.py", "megatron/core/optimizer/optimizer_config.py"],
        "flags": argparse_options(show(repo, ref, "megatron/training/arguments.py")),
        "transformer_config_fields": sorted(set(dataclass_fields(tc, "TransformerConfig"))
                                            | set(dataclass_fields(mpc, "ModelParallelConfig"))),
        "optimizer_config_fields": dataclass_fields(opt, "OptimizerConfig"),
    }


def maxtext(repo: Path) -> dict:
    ref = MAXTEXT_REF
    base = yaml.safe_load(show(repo, ref, "MaxText/configs/base.yml"))
    models = {name: yaml.safe_load(show(repo, ref, f"MaxText/configs/models/{name}.yml")) for name in MAXTEXT_MODELS}
    return {"repository": "AI-Hypercomputer/maxtext", "ref": ref, "commit": commit_of(repo, ref),
            "files": ["MaxText/configs/base.yml", *(f"MaxText/configs/models/{n}.yml" for n in MAXTEXT_MODELS)],
            "keys": {k: type(v).__name__ for k, v in sorted(base.items())}, "models": models}


def nemo1(repo: Path) -> dict:
    ref = NEMO1_REF
    path = "examples/nlp/language_modeling/conf/megatron_gpt_config.yaml"
    return {"repository": "NVIDIA/NeMo", "ref": ref, "commit": commit_of(repo, ref), "files": [path],
            "keys": flatten(yaml.safe_load(show(repo, ref, path)))}


NEMO2_CLASSES = {
    "MegatronStrategy": "nemo/lightning/pytorch/strategies/megatron_strategy.py",
    "MockDataModule": "nemo/collections/llm/gpt/data/mock.py",
    "PreTrainingDataModule": "nemo/collections/llm/gpt/data/pre_training.py",
    "NsysCallback": "nemo/lightning/pytorch/callbacks/nsys.py",
    "AutoResume": "nemo/lightning/resume.py",
    "CosineAnnealingScheduler": "nemo/lightning/pytorch/optim/lr_scheduler.py",
    "ModelCheckpoint": "nemo/lightning/pytorch/callbacks/model_checkpoint.py",
    "MegatronCommOverlapCallback": "nemo/lightning/pytorch/callbacks/megatron_comm_overlap.py",
}
#: the recipes llmb's nemo2 backend uses (llmb.launch.backends.nemo2.RECIPES)
NEMO2_MODEL_RECIPES = ["llama31_8b", "llama31_70b", "llama31_405b", "llama3_8b", "llama3_70b", "llama4_e128", "mixtral_8x22b",
                       "nemotron4_340b"]
NEMO2_MODULES = {
    "nemo.collections.llm.gpt.data.mock": "nemo/collections/llm/gpt/data/mock.py",
    "nemo.collections.llm.gpt.data.pre_training": "nemo/collections/llm/gpt/data/pre_training.py",
    "nemo.collections.llm.recipes.precision.mixed_precision": "nemo/collections/llm/recipes/precision/mixed_precision.py",
    "nemo.collections.nlp.modules.common.tokenizer_utils": "nemo/collections/nlp/modules/common/tokenizer_utils.py",
    "nemo.lightning.pytorch.callbacks": "nemo/lightning/pytorch/callbacks/__init__.py",
    "nemo.lightning.pytorch.callbacks.megatron_comm_overlap": "nemo/lightning/pytorch/callbacks/megatron_comm_overlap.py",
    "nemo.lightning": "nemo/lightning/__init__.py",
}


def class_defaults(sources: list[str]) -> dict[str, dict[str, object]]:
    """Every class's own literal field defaults and its bases, resolved down the inheritance
    chain within ``sources``: class -> {field: value}."""
    own: dict[str, tuple[list[str], dict[str, object]]] = {}
    for source in sources:
        for node in ast.parse(source).body:
            if isinstance(node, ast.ClassDef):
                fields = {}
                for stmt in node.body:
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                        value = _literal(stmt.value)
                        if value is not None or (isinstance(stmt.value, ast.Constant) and stmt.value.value is None):
                            fields[stmt.target.id] = value
                bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
                own[node.name] = (bases, fields)

    def resolved(name: str) -> dict[str, object]:
        bases, fields = own.get(name, ([], {}))
        out: dict[str, object] = {}
        for base in bases:
            out.update(resolved(base))
        out.update(fields)
        return out

    return {name: resolved(name) for name in own}


def recipe_model_classes(repo: Path, ref: str, recipes: list[str]) -> dict[str, str]:
    """Recipe module -> the model config class its ``model()`` builds."""
    import re

    out = {}
    family = show(repo, ref, "nemo/collections/llm/recipes/nemotron.py")
    versions = dict(re.findall(r'version == "(\w+)":\s*\n\s*config = run\.Config\((\w+)\)', family))
    for name in recipes:
        text = show(repo, ref, f"nemo/collections/llm/recipes/{name}.py")
        m = re.search(r"run\.Config\((\w+Config\w*)\)", text)
        if m:
            out[name] = m.group(1)
        elif name in versions:
            out[name] = versions[name]
    return out


def nemo2(repo: Path) -> dict:
    ref = NEMO2_REF
    files = git(repo, "ls-tree", "-r", "--name-only", ref).split()
    recipes = {}
    for f in files:
        if f.startswith("nemo/collections/llm/recipes/") and f.endswith(".py") and f.count("/") == 4:
            params = function_params(show(repo, ref, f), "pretrain_recipe")
            if params is not None:
                recipes[Path(f).stem] = params
    paths: set[str] = set()
    for f in files:
        if f.endswith(".py") and (f.startswith("scripts/performance/") or f.startswith("nemo/collections/llm/recipes/")):
            paths |= recipe_paths(show(repo, ref, f))
    gpt = show(repo, ref, "nemo/collections/llm/gpt/model/base.py")
    return {
        "repository": "NVIDIA/NeMo", "ref": ref, "commit": commit_of(repo, ref),
        "files": sorted({*NEMO2_CLASSES.values(), *NEMO2_MODULES.values(), "nemo/collections/llm/gpt/model/base.py",
                         "nemo/collections/llm/recipes/*.py", "scripts/performance/**/*.py"}),
        "recipes": dict(sorted(recipes.items())),
        "init_params": {c: init_params(show(repo, ref, p), c) for c, p in NEMO2_CLASSES.items()},
        "module_names": {m: top_level_names(show(repo, ref, p)) for m, p in NEMO2_MODULES.items()},
        "gpt_config_fields": dataclass_fields(gpt, "GPTConfig"),
        "model_classes": recipe_model_classes(repo, ref, NEMO2_MODEL_RECIPES),
        "model_class_defaults": {
            k: v for k, v in class_defaults([show(repo, ref, f"nemo/collections/llm/gpt/model/{m}.py")
                                            for m in ("llama", "nemotron", "mixtral")]).items()
            if k in set(recipe_model_classes(repo, ref, NEMO2_MODEL_RECIPES).values())},
        "recipe_paths_assigned": sorted(paths),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megatron", type=Path, required=True)
    ap.add_argument("--nemo", type=Path, required=True)
    ap.add_argument("--maxtext", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/golden/frameworks")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    outputs = {
        f"megatron-lm_{MEGATRON_REF}.json": megatron(args.megatron),
        f"maxtext_{MAXTEXT_REF}.json": maxtext(args.maxtext),
        f"nemo_{NEMO1_REF}_megatron_gpt_config.json": nemo1(args.nemo),
        f"nemo_{NEMO2_REF}_api.json": nemo2(args.nemo),
    }
    for name, data in outputs.items():
        (args.out / name).write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
