"""Run health: a non-finite loss or gradient norm stops the run; a hung collective fails after
the process-group timeout; test hooks that inject the failures the tests need.

* NaN/inf: every rank sees the same loss and grad norm (both are all-reduced), so every rank
  stops at the same step without extra communication. The run's summary gets status
  ``invalid`` with the reason; ``llmb run`` exits with :data:`EXIT_INVALID`.
* Hung collectives: the process group is created with ``timeout`` = ``--pg-timeout-s``. On gloo
  a collective that waits longer raises; the runner turns that into :class:`CollectiveTimeout`
  (one line, exit 2). On NCCL the watchdog (``TORCH_NCCL_ASYNC_ERROR_HANDLING``, on by default)
  aborts the process after the same timeout; torchrun then reports the failed rank (GPU path,
  not run here).
* Killed ranks: ``llmb run --max-restarts R`` passes torchrun's elastic restarts; a restarted
  worker (``TORCHELASTIC_RESTART_COUNT`` > 0) resumes from the latest complete checkpoint of
  its experiment (see :mod:`llmb.engine.hooks`).

Test hooks (environment variables, read only by the engine's workers):
``LLMB_INJECT_NAN_AT_STEP=N`` makes step N's loss NaN; ``LLMB_KILL_RANK_AT_STEP=R:N`` makes rank
R SIGKILL itself at the start of step N in the first attempt (restart count 0) only;
``LLMB_KILL_DURING_SAVE_AT_STEP=N`` SIGKILLs rank 0 in the middle of saving step N's checkpoint
(every shard and DCP's ``.metadata`` written, not yet published): the worst moment for a
checkpoint that is not published atomically. ``LLMB_INJECT_ENOSPC_AT_SAVE=N`` makes the disk
"full" at that moment of step N's save (where a small tmpfs cannot be mounted for the test).
"""

from __future__ import annotations

import math
import os
import signal

from llmb.errors import SystemFailure

EXIT_INVALID = 3  # the run finished its work but its numbers are invalid (NaN/inf)
INJECT_NAN_ENV = "LLMB_INJECT_NAN_AT_STEP"
KILL_RANK_ENV = "LLMB_KILL_RANK_AT_STEP"
KILL_DURING_SAVE_ENV = "LLMB_KILL_DURING_SAVE_AT_STEP"
ENOSPC_AT_SAVE_ENV = "LLMB_INJECT_ENOSPC_AT_SAVE"


class RunInvalid(SystemFailure):
    """The run produced a non-finite loss or gradient norm; its summary is marked INVALID."""

    exit_code = EXIT_INVALID


class CollectiveTimeout(SystemFailure):
    """A collective did not complete within the process-group timeout."""


def restart_count() -> int:
    """How many times torchrun restarted this worker group (0 on the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def nonfinite_reason(step: int, loss: float, grad_norm: float) -> str | None:
    """One line saying why step ``step`` is invalid, or None when both numbers are finite."""
    bad = [f"{name} {value}" for name, value in (("loss", loss), ("grad norm", grad_norm)) if not math.isfinite(value)]
    if not bad:
        return None
    return f"non-finite {' and '.join(bad)} at step {step}: training stopped, the run is INVALID"


def injected_nan_step() -> int | None:
    raw = os.environ.get(INJECT_NAN_ENV, "").strip()
    return int(raw) if raw else None


def maybe_kill_self(rank: int, step: int) -> None:
    """Test hook: SIGKILL this rank at ``step`` of the first attempt when asked to."""
    raw = os.environ.get(KILL_RANK_ENV, "").strip()
    if not raw or restart_count() > 0:
        return
    target_rank, target_step = (int(x) for x in raw.split(":"))
    if rank == target_rank and step == target_step:
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_kill_during_save(rank: int, step: int) -> None:
    """Test hook: SIGKILL rank 0 between writing step ``step``'s checkpoint and publishing it."""
    raw = os.environ.get(KILL_DURING_SAVE_ENV, "").strip()
    if raw and rank == 0 and int(raw) == step and restart_count() == 0:
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_fail_save(step: int) -> None:
    """Test hook: the disk fills up while step ``step``'s checkpoint is being written (its
    shards are on disk, the checkpoint is not yet published)."""
    import errno

    raw = os.environ.get(ENOSPC_AT_SAVE_ENV, "").strip()
    if raw and int(raw) == step:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def failure_line(exc: BaseException, timeout_s: float) -> str | None:
    """One line for a distributed failure a user can act on, or None for anything else.
    gloo says 'Timed out waiting ...ms for recv operation' for a hung collective and
    'Connection closed by peer' when another rank died."""
    text = str(exc).lower()
    if "connect" in text and ("refused" in text or "timed out connecting" in text):
        return "could not connect to the other ranks (one of them died or never started; see above)"
    if "timed out" in text or "timeout" in text:
        return (f"a collective did not complete within the process-group timeout ({timeout_s:g} s): "
                "another rank hung or died (raise --pg-timeout-s if the step is just slow)")
    if "connection closed by peer" in text or "connection reset" in text or "broken pipe" in text:
        return "another rank died during a collective (see its output above); --max-restarts R resumes from the latest checkpoint"
    return None


def invalid_before_restart(exp_dir) -> str | None:
    """On an elastic restart: the reason if the previous attempt ended INVALID (NaN/inf)."""
    from llmb.errors import LlmbError
    from llmb.records import SUMMARY_FILE, RunSummary

    if restart_count() == 0:
        return None
    try:
        summary = RunSummary.read(exp_dir / SUMMARY_FILE)
    except LlmbError:  # none yet, or unreadable: nothing says the attempt was invalid
        return None
    return summary.invalid_reason if summary.status == "invalid" else None
