#!/usr/bin/env bash
# Download, into .whl/ (git-ignored), the wheels scripts/gpu-check.sh installs on the GPU machine,
# whose Python 3.12 image has torch 2.11 + CUDA 13 but no package registry (and no pydantic,
# torchao or torchtitan). Run it here, where pip reaches the registry; then carry .whl with the
# device tool (`carry: [".whl"]`). Pinned to what matches the image:
#   pydantic 2.14.3 (llmb's pin) and what it requires (pydantic-core 2.50.4, ...);
#   torchao 0.17.0: its cpp extensions need torch >= 2.11 (torchao/__init__.py), 0.16 was built
#     against 2.10 and 0.18 against 2.12;
#   torchtitan 0.2.2 (Python >= 3.10) and the packages its llama3 model module imports.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
WHEELS=(
  pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0
  torchao==0.17.0
  torchtitan==0.2.2 tyro==1.0.17 docstring-parser==0.17.0 typeguard==4.4.4 torchdata==0.11.0
  datasets==3.6.0 dill==0.3.8 multiprocess==0.70.16
)
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl "${WHEELS[@]}"
du -sh .whl
