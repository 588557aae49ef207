"""The launches in ``tests/golden/backends/<backend>/*.txt``, for the scripts that hand them to a
framework's own config code (``check-megatron-args.py``, ``check-nemo1-overrides.py``,
``check-nemo2-scripts.py``, ``check-maxtext-config.py``). Standard library only: those scripts
run under the frameworks' environments, not llmb's."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden" / "backends"


@dataclass(frozen=True)
class GoldenLaunch:
    path: Path  # the golden file (its stem: workload_size)
    heading: str  # "<gpus> x <gpu type> <dtype>"
    env: dict[str, str]
    argv: list[str]  # the command, one element per golden line
    files: dict[str, str]  # generated files by name


def launches(backend: str):
    """Every rendered launch of ``backend``, file by file and row by row (refusals skipped)."""
    for path in sorted((GOLDEN / backend).glob("*.txt")):
        for block in path.read_text(encoding="utf-8").split("\n### ")[1:]:
            if "REFUSED:" in block:
                continue
            lines = block.splitlines()
            env = dict(line[5:].split("=", 1) for line in lines if line.startswith("env: "))
            command, _, rest = block.split("command:\n", 1)[1].partition("\n--- ")
            argv = [shlex.split(line.strip())[0] for line in command.splitlines() if line.strip()]
            files = {}
            for part in ("--- " + rest).split("\n--- ") if rest else ():
                name, _, text = part.removeprefix("--- ").partition("\n")
                files[name] = text
            yield GoldenLaunch(path, lines[0], env, argv, files)
