"""The job store: one SQLite file of measured runs, keyed by run id.

Location: ``$LLMB_HOME/jobs.db`` (``~/.llmb/jobs.db`` by default). Several processes may write
at once (two ``llmb import`` in parallel, a Slurm epilogue): the database runs in WAL mode,
waits up to :data:`BUSY_TIMEOUT_S` for a lock, and every write is one ``BEGIN IMMEDIATE``
transaction, so a reader never sees half a run and writers queue instead of failing.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` lists the steps from
an empty file to the current version, applied in order under a write lock (so two processes
opening a new store at once migrate it once). A store written by a newer llmb is refused
rather than damaged.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmb.errors import LlmbError, SystemFailure
from llmb.paths import llmb_home
from llmb.results.record import StepRecord

BUSY_TIMEOUT_S = 30.0

#: Each entry upgrades the schema by one version (statements run in one transaction).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # v1: runs
    (
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            workload TEXT, size TEXT, dtype TEXT, gpus INTEGER, gpu_type TEXT, cluster TEXT,
            layout TEXT,                      -- JSON: the resolved parallel layout
            format TEXT, status TEXT NOT NULL, window TEXT,
            step_time_s REAL, step_time_std_s REAL, tokens_per_s REAL, tflops_per_gpu REAL,
            mfu REAL, days_per_1t_tokens REAL, convention TEXT,
            stats TEXT, metrics TEXT, notes TEXT,   -- JSON
            log_path TEXT, log_bytes INTEGER,
            started_at TEXT, finished_at TEXT, imported_at TEXT NOT NULL
        )""",
        "CREATE INDEX runs_config ON runs (workload, size, dtype, gpus, gpu_type)",
    ),
    # v2: per-step records, for plots and re-windowing without the log
    (
        """CREATE TABLE steps (
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            iteration INTEGER NOT NULL,
            step_time_s REAL, tflops_per_gpu REAL, tokens_per_s REAL, tokens_per_s_per_gpu REAL,
            loss REAL, grad_norm REAL, mem_bytes REAL,
            PRIMARY KEY (run_id, iteration)
        )""",
    ),
    # v3: named sets of runs (reference sets for `llmb compare`), the scheduler's job id
    (
        """CREATE TABLE run_sets (
            name TEXT NOT NULL, run_id TEXT NOT NULL, added_at TEXT NOT NULL,
            PRIMARY KEY (name, run_id)
        )""",
        "ALTER TABLE runs ADD COLUMN job_id TEXT",
    ),
    # v4: runs launched by llmb: the scheduler's view (state and its reason, e.g. Slurm's
    # PENDING/RUNNING/COMPLETED/FAILED/CANCELLED), the experiment folder, submission time
    (
        "ALTER TABLE runs ADD COLUMN state TEXT",
        "ALTER TABLE runs ADD COLUMN state_reason TEXT",
        "ALTER TABLE runs ADD COLUMN experiment_dir TEXT",
        "ALTER TABLE runs ADD COLUMN submitted_at TEXT",
    ),
    # v5: what ran: the engine proxy of a shrunk model (llmb runs) and the device (cpu/cuda),
    # so a proxy run is never mistaken for the full-size recipe it follows
    (
        "ALTER TABLE runs ADD COLUMN proxy TEXT",
        "ALTER TABLE runs ADD COLUMN device TEXT",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

RUN_COLUMNS = (
    "run_id", "workload", "size", "dtype", "gpus", "gpu_type", "cluster", "layout", "format", "status",
    "window", "step_time_s", "step_time_std_s", "tokens_per_s", "tflops_per_gpu", "mfu",
    "days_per_1t_tokens", "convention", "stats", "metrics", "notes", "log_path", "log_bytes",
    "started_at", "finished_at", "imported_at", "job_id", "state", "state_reason", "experiment_dir",
    "submitted_at", "proxy", "device",
)
#: Facts a launcher records that a later parse of the log must not erase.
_KEEP_COLUMNS = ("cluster", "job_id", "state", "state_reason", "experiment_dir", "submitted_at", "proxy", "device")
_JSON_COLUMNS = ("layout", "stats", "metrics", "notes")
STEP_COLUMNS = ("iteration", "step_time_s", "tflops_per_gpu", "tokens_per_s", "tokens_per_s_per_gpu", "loss", "grad_norm", "mem_bytes")


def default_path() -> Path:
    return llmb_home() / "jobs.db"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_safe(value: Any) -> Any:
    # SQLite and JSON have no NaN: store it as NULL rather than fail or lie.
    if isinstance(value, float) and value != value:
        return None
    return value


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema to ``target``; returns the version found before."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found == target:
        return found  # the common case: no write lock needed
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise LlmbError(
                f"the job store has schema v{found}, newer than this llmb (v{SCHEMA_VERSION}); upgrade llmb"
            )
        for version in range(found, target):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
        conn.execute("COMMIT")
        return found
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def connect(path: Path, migrate_to: int | None = SCHEMA_VERSION) -> sqlite3.Connection:
    """Open (creating if needed) a store at ``path`` in WAL mode and migrate it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LlmbError(f"cannot create {path.parent} for the job store: {exc.strerror or exc}") from None
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        _set_wal(conn)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        if migrate_to is not None:
            migrate(conn, migrate_to)
        return conn
    except sqlite3.DatabaseError as exc:
        raise store_error(path, exc) from None


def store_error(path: Path, exc: sqlite3.DatabaseError) -> Exception:
    """One line for a store that failed: the environment's fault (a full disk, an I/O error, a
    read-only file) is a system failure; a file that is no llmb store is the user's to move."""
    text = str(exc).lower()
    if any(k in text for k in ("disk is full", "disk i/o", "readonly", "read-only", "unable to open", "locked")):
        what = "disk full" if "full" in text else str(exc)
        return SystemFailure(f"the job store {path} cannot be written: {what}")
    return LlmbError(f"{path} is not an llmb job store ({exc}); move it away to start a new one, "
                     "or point LLMB_HOME elsewhere")


def _set_wal(conn: sqlite3.Connection) -> None:
    # Switching a new file to WAL needs a brief exclusive lock that does not always honour the
    # busy timeout, so a process racing another one's first open retries here.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass
class Store:
    """The job store; each method opens its own short transaction."""

    path: Path

    @classmethod
    def open(cls, path: Path | None = None) -> Store:
        store = cls(path or default_path())
        with store._conn():
            pass  # create and migrate now, so errors surface at open
        return store

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = connect(self.path)
        try:
            yield conn
        except sqlite3.DatabaseError as exc:  # e.g. the disk filled up during a write
            raise store_error(self.path, exc) from None
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite already rolled back (a full disk ends the transaction itself)
                raise

    # ------------------------------------------------------------------ writing

    def put(self, run: dict[str, Any], steps: Iterable[StepRecord] = ()) -> None:
        """Insert or replace one run (and its steps) atomically."""
        self.put_many([(run, steps)])

    def put_many(self, runs: Iterable[tuple[dict[str, Any], Iterable[StepRecord]]]) -> None:
        """Insert or replace several runs (with their steps) in one transaction: all are stored,
        or none is."""
        prepared = [self._rows(run, steps) for run, steps in runs]
        with self._write() as conn:
            for row, step_rows in prepared:
                self._insert(conn, row, step_rows)

    @staticmethod
    def _rows(run: dict[str, Any], steps: Iterable[StepRecord]) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
        row = {k: _json_safe(run.get(k)) for k in RUN_COLUMNS}
        if not row["run_id"]:
            raise LlmbError("a run needs a run id")
        row["imported_at"] = row["imported_at"] or utc_now()
        for k in _JSON_COLUMNS:
            if row[k] is not None and not isinstance(row[k], str):
                row[k] = json.dumps(row[k], default=str)
        step_rows = [(row["run_id"], *(_json_safe(getattr(s, c)) for c in STEP_COLUMNS)) for s in steps]
        return row, step_rows

    @staticmethod
    def _insert(conn: sqlite3.Connection, row: dict[str, Any], step_rows: list[tuple[Any, ...]]) -> None:
        cols = ", ".join(RUN_COLUMNS)
        marks = ", ".join(f":{c}" for c in RUN_COLUMNS)
        # Re-importing a log refreshes what the log says; facts only the user gave (cluster,
        # job id) are kept unless given again.
        updates = ", ".join(
            f"{c} = COALESCE(excluded.{c}, runs.{c})" if c in _KEEP_COLUMNS else f"{c} = excluded.{c}"
            for c in RUN_COLUMNS
            if c != "run_id"
        )
        conn.execute(f"INSERT INTO runs ({cols}) VALUES ({marks}) ON CONFLICT (run_id) DO UPDATE SET {updates}", row)
        conn.execute("DELETE FROM steps WHERE run_id = ?", (row["run_id"],))
        conn.executemany(
            f"INSERT INTO steps (run_id, {', '.join(STEP_COLUMNS)}) VALUES ({', '.join('?' * (len(STEP_COLUMNS) + 1))})",
            step_rows,
        )

    def set_state(self, run_id: str, state: str, reason: str | None = None) -> None:
        """Record the scheduler's state of a launched run (and why, when it says)."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE runs SET state = ?, state_reason = COALESCE(?, state_reason) WHERE run_id = ?",
                (state, reason, run_id),
            )
            if cur.rowcount == 0:
                raise LlmbError(f"no run {run_id!r} in the job store ({self.path})")

    def find_job(self, job_id: str) -> dict[str, Any] | None:
        """The run launched as scheduler job ``job_id``, if llmb launched it."""
        with self._conn() as conn:
            row = conn.execute("SELECT * FROM runs WHERE job_id = ? ORDER BY submitted_at DESC LIMIT 1",
                               (str(job_id),)).fetchone()
        return self._decode(row) if row is not None else None

    def tracked(self, finished: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """Launched runs (with a job id) whose state is unknown or not in ``finished``."""
        with self._conn() as conn:
            rows = [self._decode(r) for r in conn.execute(
                "SELECT * FROM runs WHERE job_id IS NOT NULL ORDER BY submitted_at, run_id")]
        return [r for r in rows if r.get("state") not in finished]

    def delete(self, run_id: str) -> bool:
        with self._write() as conn:
            conn.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM run_sets WHERE run_id = ?", (run_id,))
            return conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0

    def save_set(self, name: str, run_ids: list[str]) -> None:
        """Name a set of runs (replacing a set of that name); every run must exist."""
        with self._write() as conn:
            for rid in run_ids:
                if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (rid,)).fetchone() is None:
                    raise LlmbError(f"no run {rid!r} in the job store ({self.path})")
            conn.execute("DELETE FROM run_sets WHERE name = ?", (name,))
            now = utc_now()
            conn.executemany("INSERT INTO run_sets (name, run_id, added_at) VALUES (?, ?, ?)", [(name, r, now) for r in run_ids])

    # ------------------------------------------------------------------ reading

    @staticmethod
    def _decode(row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        for k in _JSON_COLUMNS:
            if out.get(k) is not None:
                out[k] = json.loads(out[k])
        return out

    def get(self, run_id: str) -> dict[str, Any]:
        with self._conn() as conn:
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                # substr, not LIKE: run ids contain "_", a LIKE wildcard
                like = conn.execute(
                    "SELECT run_id FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY run_id LIMIT 2",
                    (len(run_id), run_id),
                ).fetchall()
                if len(like) == 1:  # a unique prefix is enough, as with git hashes
                    row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (like[0][0],)).fetchone()
        if row is None:
            raise LlmbError(f"no run {run_id!r} in the job store ({self.path})")
        return self._decode(row)

    def runs(
        self,
        *,
        workload: str | None = None,
        size: str | None = None,
        dtype: str | None = None,
        gpus: int | None = None,
        gpu_type: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Runs matching every given field, oldest first (by finish time, then import time)."""
        where, args = [], []
        for col, value in (("workload", workload), ("size", size), ("dtype", dtype), ("gpus", gpus),
                           ("gpu_type", gpu_type), ("status", status)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY COALESCE(finished_at, imported_at), imported_at, run_id"
        with self._conn() as conn:
            rows = [self._decode(r) for r in conn.execute(sql, args)]
        return rows[-limit:] if limit else rows

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        with self._conn() as conn:
            return [dict(r) for r in conn.execute(
                f"SELECT {', '.join(STEP_COLUMNS)} FROM steps WHERE run_id = ? ORDER BY iteration", (run_id,))]

    def set_runs(self, name: str) -> list[dict[str, Any]]:
        with self._conn() as conn:
            ids = [r[0] for r in conn.execute("SELECT run_id FROM run_sets WHERE name = ? ORDER BY run_id", (name,))]
        if not ids:
            raise LlmbError(f"no saved set {name!r} in the job store ({self.path})")
        return [self.get(i) for i in ids]

    def sets(self) -> dict[str, int]:
        with self._conn() as conn:
            return {r[0]: r[1] for r in conn.execute("SELECT name, COUNT(*) FROM run_sets GROUP BY name ORDER BY name")}
