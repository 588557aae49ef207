"""Keeping the job store in step with the scheduler: states of launched runs, their reasons,
and the finished runs' logs parsed into the store (so ``llmb jobs`` shows step time, tokens/s
and MFU next to the state)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmb.launch.slurm import TERMINAL, JobState, query_states

_OWN_ERROR = re.compile(r"^error: .+")  # what llmb itself prints
_PY_ERROR = re.compile(r"\b[A-Za-z]*Error: .+")


@dataclass(frozen=True)
class Change:
    run_id: str
    job_id: str
    old: str | None
    new: str
    reason: str | None


def job_output(run: dict[str, Any]) -> Path | None:
    """The job's own output file (``slurm-<id>.out`` in its experiment folder), if present."""
    folder = run.get("experiment_dir")
    if not folder or not run.get("job_id"):
        return None
    path = Path(folder) / f"slurm-{run['job_id']}.out"
    return path if path.exists() else None


def failure_reason(run: dict[str, Any], state: JobState) -> str:
    """Why a job did not complete: the scheduler's word plus the last error line it printed."""
    parts = [state.state.lower()]
    if state.exit_code and state.exit_code not in ("0:0",):
        parts.append(f"exit {state.exit_code}")
    if state.reason and state.reason not in ("None", "NonZeroExitCode"):
        parts.append(state.reason)
    out = job_output(run)
    if out is not None:
        own = other = None
        with out.open("r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if _OWN_ERROR.match(line):
                    own = line
                elif (m := _PY_ERROR.search(line)) is not None:
                    other = m.group(0)
        if own or other:
            parts.append((own or other)[:300])
    return "; ".join(parts)


def framework_spec(exp_dir: Path):
    """What a framework run launched by llmb was (its ``config.json``), as a results RunSpec:
    the parser then needs nothing from the log's folder name, and a full-size run is compared
    with the catalog's baseline."""
    from llmb.errors import LlmbError
    from llmb.records import CONFIG_FILE, RunConfig
    from llmb.results.identity import RunSpec

    try:
        cfg = RunConfig.read(exp_dir / CONFIG_FILE)
    except LlmbError:
        return RunSpec()
    layout = tuple(sorted((k, v) for k, v in cfg.request.overrides.items() if v is not None and k != "layers"))
    return RunSpec(workload=cfg.workload, size=cfg.size, dtype=cfg.dtype, gpus=cfg.world_size,
                   gpu_type=cfg.hardware.gpu_type, source=f"llmb {cfg.backend} launch", layout=layout,
                   proxy=cfg.proxy, device="cpu" if cfg.proxy else None)


def ingest(store, run: dict[str, Any]):
    """Parse a finished run's log into the store; the analysed result, or ``None`` when there
    is no log to parse. A framework's log is read by that framework's parser (``format``)."""
    from llmb.errors import LlmbError
    from llmb.results.analysis import analyze_logs, store_row
    from llmb.results.identity import RunSpec

    log = Path(run.get("log_path") or "")
    if not log.is_file():
        return None
    fmt = run.get("format")
    framework = fmt not in (None, "llmb")
    spec = framework_spec(log.parent) if framework else RunSpec()
    try:
        (result,) = analyze_logs([str(log)], spec=spec, fmt=fmt if framework else None)
    except (LlmbError, ValueError):
        return None
    row = store_row(result, run["run_id"], cluster=run.get("cluster"), job_id=run.get("job_id"))
    if framework:
        _fill_throughput(row, result, log.parent)
    store.put(row, result.parsed.records)
    return result


def _fill_throughput(row: dict[str, Any], result, exp_dir: Path) -> None:
    """A proxy run of a framework has no catalog metrics (its model is not the catalog's): give
    the store its job tokens/s and step time from what the log measured, with the batch llmb
    launched it with (torchtitan prints tokens/s per device only)."""
    from llmb.errors import LlmbError
    from llmb.plan.metrics import step_time_from_tokens_per_s
    from llmb.records import CONFIG_FILE, RunConfig

    if row.get("tokens_per_s") is not None:
        return
    per_device = result.stats.mean("tokens_per_s_per_gpu")
    try:
        cfg = RunConfig.read(exp_dir / CONFIG_FILE)
    except LlmbError:
        return
    if per_device is None or not per_device > 0:
        return
    row["tokens_per_s"] = per_device * cfg.world_size
    if row.get("step_time_s") is None:
        row["step_time_s"] = step_time_from_tokens_per_s(cfg.model.seq_len, cfg.layout.gbs, row["tokens_per_s"])
    row["notes"] = [*row.get("notes", []), "tokens/s and step time from the log's tokens/s per device x ranks "
                    "and the launched batch (no catalog metrics for a proxy's model)"]


def refresh(store) -> list[Change]:
    """Ask the scheduler about every launched run not known to be finished; record changes."""
    tracked = store.tracked(finished=TERMINAL)
    if not tracked:
        return []
    states = query_states([r["job_id"] for r in tracked])
    changes = []
    for run in tracked:
        state = states.get(str(run["job_id"]))
        if state is None:
            continue  # the scheduler forgot it, or we asked the wrong cluster: keep what we know
        reason = state.reason if state.reason and state.reason != "None" else None
        if state.finished:
            ingest(store, run)
            if state.state != "COMPLETED":
                reason = failure_reason(run, state)
        if state.state != run.get("state") or (reason and reason != run.get("state_reason")):
            store.set_state(run["run_id"], state.state, reason)
            changes.append(Change(run["run_id"], str(run["job_id"]), run.get("state"), state.state, reason))
    return changes


#: A local run's end, as the scheduler would say it: the engine's status -> state.
LOCAL_STATES = {"complete": "COMPLETED", "interrupted": "CANCELLED", "invalid": "FAILED", "failed": "FAILED"}


class LocalRun:
    """A run started on this host (``llmb run``), recorded in the job store like a submitted
    one: RUNNING when it starts, its log parsed and its end state when it ends, whatever the
    status. A store that cannot be written never stops the run: the caller gets one warning
    line instead (``warn``)."""

    def __init__(self, store, run_id: str, log_path: Path, warn, fmt: str = "llmb"):
        self.store, self.run_id, self.log_path, self.warn, self.fmt = store, run_id, log_path, warn, fmt

    @classmethod
    def start(cls, config, exp_dir: Path, accelerator: str, warn, fmt: str = "llmb") -> LocalRun:
        from llmb.errors import LlmbError
        from llmb.results.analysis import run_id_for_log
        from llmb.results.store import Store, utc_now

        log = exp_dir / "log.txt"
        run_id = run_id_for_log(log)
        try:
            store = Store.open()
            store.put({
                "run_id": run_id, "workload": config.workload, "size": config.size, "proxy": config.proxy,
                "dtype": config.dtype, "gpus": config.world_size, "gpu_type": config.hardware.gpu_type,
                "device": accelerator, "cluster": "local", "format": fmt, "status": "NO_DATA",
                "layout": config.layout.model_dump(), "log_path": str(log.resolve()), "state": "RUNNING",
                "experiment_dir": str(exp_dir.resolve()), "submitted_at": utc_now(),
            })
        except (LlmbError, OSError) as exc:
            warn(f"the run is not recorded in the job store: {exc}")
            store = None
        return cls(store, run_id, log, warn, fmt)

    def end(self, status: str | None, reason: str | None = None):
        """Parse the log into the store and record the end state (``status`` None: the run
        failed before writing its summary); returns the analysed result, if any."""
        from llmb.errors import LlmbError

        if self.store is None:
            return None
        state = LOCAL_STATES.get(status or "", "FAILED")
        try:
            result = ingest(self.store, {"run_id": self.run_id, "log_path": str(self.log_path), "cluster": "local",
                                         "format": self.fmt})
            self.store.set_state(self.run_id, state, reason)
        except (LlmbError, OSError) as exc:
            self.warn(f"the run's end is not recorded in the job store: {exc}")
            return None
        return result
