"""``python -m llmb ...``: the same CLI as the ``llmb`` console script (for a checkout on
``PYTHONPATH`` without an installed entry point, e.g. scripts/gpu-check.sh)."""

from llmb.cli import run

run()
