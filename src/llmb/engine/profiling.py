"""Profiling windows: torch.profiler chrome traces per rank, nsys and CUDA memory snapshots over
the same steps, and the NCCL debug environment of ENABLE_NCCLTRACE.

The window is steps ``start..stop`` (1-based, inclusive; recipe default: the catalog's
``profile_steps``). The profiler starts just before step ``start`` and stops just after step
``stop``; traces go to ``<exp>/profiles/rank<r>_steps<start>-<stop>.json`` (open them in
Perfetto or chrome://tracing; ``llmb trace`` summarizes their collectives). A profiled run's
step times include the profiler's overhead: its summary says ``timing_comparable: false``.

GPU-only paths (written, not run on this CPU-only machine):

* nsys: when the host has CUDA and ``nsys`` on PATH, the local launcher wraps the torchrun
  command in ``nsys profile --capture-range=cudaProfilerApi``
  (:func:`llmb.launch.local.nsys_prefix`); the workers call ``cudaProfilerStart``/``Stop`` at
  the window's edges, so nsys records the same steps.
* ``--memory-snapshot``: ``torch.cuda.memory._record_memory_history`` from the window's start;
  the snapshot is dumped to ``profiles/rank<r>_memory_snapshot.pickle`` after its last step
  (view it at https://pytorch.org/memory_viz).
* ENABLE_NCCLTRACE: every worker sets :func:`nccl_trace_env` (``NCCL_DEBUG=INFO``,
  ``NCCL_DEBUG_SUBSYS=COLL``, ``NCCL_DEBUG_FILE=<exp>/nccl/nccl.<host>.<pid>.log``) in its own
  environment before it joins the process group. NCCL reads these once, when a communicator
  is created, and cannot be switched off afterwards: the trace
  covers every step of the run. "The first steps only" is therefore achieved by the run's
  length, as in the recipes: trace a short run (``--steps 10`` / MAX_STEPS=10) rather than a
  benchmark run. On CPU (gloo) the variables do nothing; llmb says so.
"""

from __future__ import annotations

from pathlib import Path

import torch

PROFILES_DIR = "profiles"


def nccl_trace_env(exp_dir: Path) -> dict[str, str]:
    """Environment for ENABLE_NCCLTRACE (effective on NCCL only)."""
    (exp_dir / "nccl").mkdir(parents=True, exist_ok=True)
    return {
        "NCCL_DEBUG": "INFO",
        "NCCL_DEBUG_SUBSYS": "COLL",
        "NCCL_DEBUG_FILE": str(exp_dir / "nccl" / "nccl.%h.%p.log"),
    }


class StepProfiler:
    """Start/stop torch.profiler (and the GPU tools) around steps ``start..stop`` on the
    selected ranks. ``ranks``: None = rank 0, () = every rank."""

    def __init__(self, start: int, stop: int, rank: int, ranks: tuple[int, ...] | None, exp_dir: Path,
                 device: torch.device, memory_snapshot: bool = False, log=print):
        self.start, self.stop, self.rank = start, stop, rank
        self.enabled = (rank == 0) if ranks is None else (not ranks or rank in ranks)
        self.dir = exp_dir / PROFILES_DIR
        self.device = device
        self.memory_snapshot = memory_snapshot and device.type == "cuda"
        self.log = log
        self._prof = None
        self.trace_path: Path | None = None

    def before_step(self, step: int) -> None:
        if not self.enabled or step != self.start:
            return
        from torch.profiler import ProfilerActivity, profile

        self.dir.mkdir(parents=True, exist_ok=True)
        activities = [ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
            torch.cuda.cudart().cudaProfilerStart()  # nsys capture range (when wrapped)
            if self.memory_snapshot:
                torch.cuda.memory._record_memory_history(max_entries=100_000)
        self._prof = profile(activities=activities, record_shapes=True)
        self._prof.__enter__()

    def after_step(self, step: int) -> None:
        if self._prof is None or step != self.stop:
            return
        self.close()

    def close(self) -> None:
        """Stop and write the trace (also when the run stops inside the window)."""
        if self._prof is None:
            return
        prof, self._prof = self._prof, None
        prof.__exit__(None, None, None)
        if self.device.type == "cuda":
            torch.cuda.cudart().cudaProfilerStop()
            if self.memory_snapshot:
                snap = self.dir / f"rank{self.rank}_memory_snapshot.pickle"
                torch.cuda.memory._dump_snapshot(str(snap))
                torch.cuda.memory._record_memory_history(enabled=None)
        self.trace_path = self.dir / f"rank{self.rank}_steps{self.start}-{self.stop}.json"
        prof.export_chrome_trace(str(self.trace_path))
        self.log(f"profiler trace of steps {self.start}-{self.stop} (rank {self.rank}): {self.trace_path}")


def nccl_trace_note(device_type: str) -> str:
    if device_type == "cuda":
        return "ENABLE_NCCLTRACE: NCCL INFO lines of every step in nccl/ (summarize with `llmb trace`)"
    return "ENABLE_NCCLTRACE does nothing on CPU: gloo has no NCCL debug trace (use --profile for collectives)"

