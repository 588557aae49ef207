"""Asking Slurm about jobs: states from ``squeue``, then ``sacct``, then ``sacct -c`` (the
job-completion file), then ``scontrol`` — whatever the cluster offers — and cancelling.

All commands run with an argv list (never a shell) and a timeout.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from llmb.errors import LlmbError, SystemFailure

TERMINAL = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
     "BOOT_FAIL", "DEADLINE", "REVOKED"}
)
ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"})


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str  # Slurm's base state, e.g. RUNNING, COMPLETED, CANCELLED
    exit_code: str = ""  # "code:signal" as Slurm prints it, when known
    reason: str = ""
    source: str = ""  # which command answered

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


def _run(argv: list[str], timeout_s: float = 30.0) -> subprocess.CompletedProcess[str] | None:
    """Run a Slurm client; ``None`` when it is not installed."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SystemFailure(f"{argv[0]} did not answer within {timeout_s:.0f} s") from None


def _base_state(text: str) -> str:
    # sacct prints "CANCELLED by 0"; squeue may print "RUNNING+" style flags in some versions.
    return text.strip().split(" ")[0].rstrip("+").upper()


def _from_squeue(ids: list[str]) -> dict[str, JobState]:
    proc = _run(["squeue", "-h", "-o", "%i|%T|%r", "-j", ",".join(ids)])
    if proc is None or proc.returncode != 0:
        return {}
    found = {}
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[0] in ids:
            found[parts[0]] = JobState(parts[0], _base_state(parts[1]), "", parts[2].strip(), "squeue")
    return found


def _from_sacct(ids: list[str], completion_file: bool) -> dict[str, JobState]:
    argv = ["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j", ",".join(ids)]
    if completion_file:
        argv = ["sacct", "-c", "-n", "-P", "-o", "jobid,state,exitcode", "-j", ",".join(ids)]
    proc = _run(argv)
    if proc is None or proc.returncode != 0:
        return {}
    found = {}
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) >= 3 and parts[0] in ids:
            found[parts[0]] = JobState(
                parts[0], _base_state(parts[1]), parts[2].strip(), "", "sacct -c" if completion_file else "sacct"
            )
    return found


def _from_scontrol(job_id: str) -> JobState | None:
    proc = _run(["scontrol", "show", "job", "-o", job_id])
    if proc is None or proc.returncode != 0:
        return None
    fields = dict(tok.split("=", 1) for tok in proc.stdout.split() if "=" in tok)
    if "JobState" not in fields:
        return None
    return JobState(job_id, _base_state(fields["JobState"]), fields.get("ExitCode", ""),
                    fields.get("Reason", ""), "scontrol")


def query_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """States of ``job_ids``; a job no source knows is absent from the result."""
    ids = [str(j) for j in job_ids]
    if not ids:
        return {}
    states = _from_squeue(ids)
    for completion_file in (False, True):
        missing = [j for j in ids if j not in states]
        if missing:
            states.update(_from_sacct(missing, completion_file))
    # scontrol knows exit codes and reasons the others may not; ask it for finished jobs too.
    for j in ids:
        if j not in states or (states[j].finished and not states[j].reason):
            extra = _from_scontrol(j)
            if extra is not None:
                base = states.get(j)
                states[j] = extra if base is None else JobState(
                    j, base.state, base.exit_code or extra.exit_code, extra.reason, base.source
                )
    return states


def cancel(job_id: str) -> None:
    proc = _run(["scancel", str(job_id)])
    if proc is None:
        raise LlmbError("scancel is not on PATH: is this a Slurm login node?")
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise LlmbError(f"scancel {job_id} failed: {lines[-1] if lines else proc.returncode}")


def slurm_available() -> bool:
    proc = _run(["sinfo", "-h", "-o", "%P"], timeout_s=10)
    return proc is not None and proc.returncode == 0


def partitions() -> list[str]:
    """Partition names (the default one marked with ``*`` by sinfo comes first)."""
    proc = _run(["sinfo", "-h", "-o", "%P"], timeout_s=10)
    if proc is None or proc.returncode != 0:
        return []
    names = [p.strip() for p in proc.stdout.split() if p.strip()]
    names.sort(key=lambda p: not p.endswith("*"))
    return [p.rstrip("*") for p in names]
