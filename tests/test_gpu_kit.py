"""The GPU validation kit (scripts/gpu-check.sh): it refuses in one line where there is no GPU,
and its plumbing (every check, the table, the files) works, checked on the CPU with small shapes
(``--cpu-smoke``; its numbers mean nothing, the GPU run's do)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU: the kit would run")
def test_the_kit_refuses_without_a_gpu(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu-check.sh"), str(tmp_path / "out")],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "needs a CUDA GPU" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing installed or written


@pytest.mark.slow
def test_the_kits_plumbing_on_a_cpu(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--out", str(out), "--cpu-smoke", "--steps", "8",
         "--skip", "compile,hf,titan"],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "gpu-check.json").read_text())
    status = {r["check"]: r["status"] for r in data["checks"]}
    assert status == {"env": "ok", "gemm": "ok", "bf16": "ok", "compile": "SKIP", "fp8": "SKIP", "hf": "SKIP", "titan": "SKIP", "backend": "ok",
                      "moe": "ok", "nemotron": "ok", "dcp": "ok", "profiler": "ok", "nccl": "SKIP", "results": "ok"}
    gemms = next(r for r in data["checks"] if r["check"] == "gemm")["shapes"]
    assert {r["shape"] for r in gemms} >= {"grok fc1 ETP1", "grok fc1 ETP4"}
    assert all(r["tflops"] > 0 and 0 < r["predicted_share"] < 1 for r in gemms)
    experts = next(r for r in data["checks"] if r["check"] == "gemm")["experts"]
    assert [r["experts"] for r in experts] == [2, 2]
    assert all(r["measured_over_dense"] > 0 and 0 < r["predicted_over_dense"] <= 1 for r in experts)
    table = (out / "gpu-check.md").read_text()
    assert "| bf16 | ok |" in table and proc.stdout.rstrip().endswith(table.rstrip().splitlines()[-1])
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and {"gpu-check.json", "gpu-check.md", "gpu-check.log", "report.md"} <= set(files)
