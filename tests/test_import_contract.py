"""The architecture's import contract, read from the source (AST, so nothing is imported):
every ``import`` anywhere in a module, at the top or inside a function, counts.

- no cycles between modules;
- ``catalog``, ``plan``, ``results`` and ``report`` (and the shared top-level modules they use)
  reach no torch, however indirectly, so planning and analysis run where torch is not installed;
- ``engine`` reaches neither ``launch`` nor ``cli``; ``launch`` never reaches ``engine`` (it starts
  workers by module name);
- ``cli`` spawns no processes itself (that is ``launch``'s job).

Importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``: for what a module
*reaches*, those package imports count; for cycles, only the imports written in the code.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
TORCH = ("torch", "torchao", "torchtitan", "transformers")
NO_TORCH = ("llmb.catalog", "llmb.plan", "llmb.results", "llmb.report")
SPAWNING_MODULES = {"subprocess", "multiprocessing", "pty", "torch.multiprocessing"}
SPAWNING_CALLS = {"system", "popen", "fork", "forkpty", "spawnl", "spawnv", "spawnve", "spawnvp", "posix_spawn",
                  "posix_spawnp", "execv", "execve", "execvp", "execl", "execlp"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / "llmb").rglob("*.py"))}


@cache
def _tree(name: str) -> ast.Module:
    return ast.parse(_modules()[name].read_text(encoding="utf-8"), filename=str(_modules()[name]))


def _is_package(name: str) -> bool:
    return _modules()[name].name == "__init__.py"


@cache
def _imports(name: str) -> frozenset[str]:
    """Every module ``name`` imports (llmb modules by their full name, others by theirs)."""
    mods = _modules()
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in mods else base)
    return frozenset(found)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@cache
def _reaches(name: str) -> frozenset[str]:
    """Every module importing ``name`` runs, directly or not (packages' ``__init__`` included)."""
    mods = _modules()
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        for target in _imports(current) | set(_parents(current)):
            if target in seen:
                continue
            seen.add(target)
            if target in mods:
                todo.append(target)
    seen.discard(name)
    return frozenset(seen)


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and self-imports."""
    mods = _modules()
    graph = {m: sorted(t for t in _imports(m) if t in mods) for m in mods}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                out.append(sorted(component))

    for m in graph:
        if m not in index:
            visit(m)
    return out


def _in(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _of(packages: tuple[str, ...]) -> list[str]:
    return [m for m in _modules() if _in(m, packages)]


def test_the_contract_sees_the_whole_package():
    mods = _modules()
    assert len(mods) > 80 and "llmb.engine.runner" in mods and "llmb.plan.run" in mods
    # The reader sees function-level imports too (this one is inside a function).
    assert "llmb.engine.runner" in _imports("llmb.cli.engine_cmds")


def test_no_import_cycles():
    assert _cycles() == []


@pytest.mark.parametrize("module", _of(NO_TORCH))
def test_planning_results_and_reports_reach_no_torch(module):
    bad = sorted(t for t in _reaches(module) if _in(t, TORCH) or _in(t, ("llmb.engine",)))
    assert bad == [], f"{module} reaches {bad}"


@pytest.mark.parametrize("module", _of(("llmb.engine",)))
def test_the_engine_reaches_neither_launchers_nor_the_cli(module):
    bad = sorted(t for t in _reaches(module) if _in(t, ("llmb.launch", "llmb.cli")))
    assert bad == [], f"{module} reaches {bad}"


@pytest.mark.parametrize("module", _of(("llmb.launch",)))
def test_launchers_never_reach_the_engine(module):
    bad = sorted(t for t in _reaches(module) if _in(t, ("llmb.engine",) + TORCH))
    assert bad == [], f"{module} reaches {bad}"


@pytest.mark.parametrize("module", _of(("llmb.cli",)))
def test_the_cli_spawns_no_processes(module):
    spawning = sorted(t for t in _imports(module) if _in(t, tuple(SPAWNING_MODULES)))
    calls = sorted(
        node.func.attr for node in ast.walk(_tree(module))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name) and node.func.value.id == "os" and node.func.attr in SPAWNING_CALLS
    )
    assert spawning == [] and calls == [], f"{module}: imports {spawning}, calls os.{calls}"


def test_a_violation_would_be_seen(tmp_path, monkeypatch):
    """The checks can fail: a plan module importing torch inside a function, and two modules
    importing each other, are both caught."""
    fake = tmp_path / "src"
    (fake / "llmb" / "plan").mkdir(parents=True)
    (fake / "llmb" / "__init__.py").write_text("")
    (fake / "llmb" / "plan" / "__init__.py").write_text("")
    (fake / "llmb" / "plan" / "a.py").write_text("from llmb.plan import b\n")
    (fake / "llmb" / "plan" / "b.py").write_text("def f():\n    import torch\n    from llmb.plan.a import x\n")
    import sys

    module = sys.modules[__name__]
    monkeypatch.setattr(module, "SRC", fake)
    for fn in (_modules, _tree, _imports, _reaches):
        fn.cache_clear()
    try:
        assert _cycles() == [["llmb.plan.a", "llmb.plan.b"]]
        assert "torch" in _reaches("llmb.plan.a")
    finally:
        monkeypatch.undo()
        for fn in (_modules, _tree, _imports, _reaches):
            fn.cache_clear()
