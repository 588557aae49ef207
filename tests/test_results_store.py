"""The SQLite job store: round trip, upsert, migrations, refusal of newer schemas, and two
importer processes writing at once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from llmb.errors import LlmbError
from llmb.results.record import StepRecord
from llmb.results.store import SCHEMA_VERSION, Store, connect, default_path, migrate


def run_row(run_id, **kw):
    row = {"run_id": run_id, "workload": "llama3.1", "size": "8b", "dtype": "bf16", "gpus": 8, "gpu_type": "h100",
           "status": "OK", "step_time_s": 12.3, "tokens_per_s": 85000.0, "stats": {"window": "11:44"},
           "metrics": {"mfu": 0.62}, "notes": ["a note"]}
    row.update(kw)
    return row


def test_default_path_follows_llmb_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMB_HOME", str(tmp_path / "h"))
    assert default_path() == tmp_path / "h" / "jobs.db"


def test_put_get_upsert_and_steps(tmp_path):
    store = Store.open(tmp_path / "jobs.db")
    steps = [StepRecord(iteration=i, raw_line_no=i, step_time_s=1.0 + i, loss=float("nan")) for i in range(3)]
    store.put(run_row("r1", cluster="eos", finished_at="2026-01-01T00:00:00Z"), steps)
    got = store.get("r1")
    assert got["metrics"] == {"mfu": 0.62} and got["notes"] == ["a note"] and got["cluster"] == "eos"
    assert [s["step_time_s"] for s in store.steps("r1")] == [1.0, 2.0, 3.0]
    assert store.steps("r1")[0]["loss"] is None  # NaN stored as NULL
    store.put(run_row("r1", status="INVALID", finished_at="2026-01-01T00:00:00Z"), steps[:1])  # re-import
    got = store.get("r1")
    assert got["status"] == "INVALID" and got["cluster"] == "eos"  # cluster kept when not given again
    assert len(store.steps("r1")) == 1
    assert store.get("r") ["run_id"] == "r1"  # unique prefix
    store.put(run_row("r2", gpus=16, finished_at="2025-12-01T00:00:00Z"))
    assert [r["run_id"] for r in store.runs()] == ["r2", "r1"]  # oldest first
    assert [r["run_id"] for r in store.runs(gpus=16)] == ["r2"]
    with pytest.raises(LlmbError, match="no run 'r'"):
        store.get("r")  # now ambiguous
    store.save_set("ref", ["r1", "r2"])
    assert [r["run_id"] for r in store.set_runs("ref")] == ["r1", "r2"] and store.sets() == {"ref": 2}
    with pytest.raises(LlmbError, match="no run"):
        store.save_set("bad", ["r9"])
    assert store.delete("r2") and not store.delete("r2")
    assert store.sets() == {"ref": 1}


def test_wal_mode_and_schema_version(tmp_path):
    Store.open(tmp_path / "jobs.db")
    conn = sqlite3.connect(tmp_path / "jobs.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_old_store_is_migrated_with_its_data(tmp_path):
    path = tmp_path / "jobs.db"
    conn = connect(path, migrate_to=None)
    migrate(conn, target=1)  # a store written by the first release
    conn.execute("INSERT INTO runs (run_id, status, imported_at) VALUES ('old', 'OK', '2025-01-01T00:00:00Z')")
    conn.close()
    store = Store.open(path)
    assert store.get("old")["status"] == "OK" and store.get("old")["job_id"] is None
    assert store.steps("old") == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_newer_or_foreign_file_is_refused(tmp_path):
    path = tmp_path / "jobs.db"
    Store.open(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(LlmbError, match="newer than this llmb"):
        Store.open(path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LlmbError, match="is not an llmb job store"):
        Store.open(junk)


_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from llmb.results.record import StepRecord
    from llmb.results.store import Store
    path, tag, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    while not go.exists():
        time.sleep(0.005)
    store = Store.open(path)  # both processes may create and migrate the new file at once
    steps = [StepRecord(iteration=i, raw_line_no=i, step_time_s=1.0) for i in range(50)]
    for i in range(40):
        store.put({"run_id": f"{tag}-{i}", "status": "OK", "step_time_s": float(i), "stats": {"i": i}}, steps)
        store.put({"run_id": "shared", "status": "OK", "step_time_s": float(i), "cluster": tag}, steps[:i + 1])
    """
)


def test_two_concurrent_importers_do_not_corrupt_the_store(tmp_path):
    path, go = tmp_path / "jobs.db", tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), tag, str(go)], stderr=subprocess.PIPE)
        for tag in ("a", "b")
    ]
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store = Store.open(path)
    runs = store.runs()
    assert len(runs) == 81 and {r["run_id"] for r in runs} >= {f"{t}-{i}" for t in "ab" for i in range(40)}
    for r in runs:
        if r["run_id"] != "shared":
            assert len(store.steps(r["run_id"])) == 50 and r["stats"] == {"i": int(r["run_id"].split("-")[1])}
    # the run both wrote is whole: its steps match the last writer's run row
    shared = store.get("shared")
    assert len(store.steps("shared")) == int(shared["step_time_s"]) + 1
