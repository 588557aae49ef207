#!/usr/bin/env bash
# The GPU validation kit: one command, run from the repository root on a CUDA machine.
#
#   scripts/gpu-check.sh [OUT_DIR] [--steps N] [--budget-s S]
#
# OUT_DIR defaults to $OUT (the device tool's folder) or ./gpu-check-out. llmb runs from this
# checkout (PYTHONPATH=src; torch is the machine's own, never reinstalled), plus the wheels in
# .whl/ when present (pydantic, torchao, torchtitan and their needs, for the GPU image's Python
# 3.12 and torch 2.11: scripts/fetch-gpu-wheels.sh downloads them where pip reaches a registry).
# The checks, their order and their outputs are described in scripts/gpu_check.py. Without a
# CUDA GPU it refuses in one line (exit 1).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-gpu-check-out}
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then OUT_DIR=$1; shift; fi
PY=${PYTHON:-python3}
# Refuse before installing anything where there is no GPU (the driver checks again).
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "error: the GPU check needs a CUDA GPU and torch; $PY sees none here (run it on the GPU machine)" >&2
  exit 1
fi
mkdir -p "$OUT_DIR"
if ls .whl/*.whl >/dev/null 2>&1; then
  SITE=${TMPDIR:-/tmp}/llmb-gpu-site
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
      > "$OUT_DIR/wheels.log" 2>&1; then
    echo "error: installing the carried wheels in .whl/ failed (see $OUT_DIR/wheels.log)" >&2
    exit 2
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" scripts/gpu_check.py --out "$OUT_DIR" "$@"
