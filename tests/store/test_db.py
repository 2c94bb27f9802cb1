"""SQLite settings and the migration runner, on real database files."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from appliance.errors import StoreError
from appliance.store import db


def test_wal_and_full_sync(tmp_path):
    conn = db.connect(tmp_path / "x.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_migrations_apply_in_order_once(tmp_path):
    conn = db.connect(tmp_path / "x.db")
    applied = db.migrate(conn)
    versions = [m.version for m in db.discover_migrations()]
    assert applied == versions and versions == sorted(versions) and versions[0] == 1
    assert db.migrate(conn) == []
    rows = conn.execute("SELECT version, sha256 FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == versions
    assert {"studies", "images", "results", "decisions", "outbox", "store_counter"} <= {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_an_applied_migration_edited_afterwards_is_reported(tmp_path, caplog):
    # The recorded sha256 is what notices a migration file changed under an existing database
    # (a hand-patched release); the rows were read back above but never compared.
    import hashlib

    folder = tmp_path / "migrations"
    folder.mkdir()
    copies = [dataclasses.replace(m, path=Path(shutil.copy(m.path, folder))) for m in db.discover_migrations()]
    conn = db.connect(tmp_path / "x.db")
    db.migrate(conn, copies)
    rows = conn.execute("SELECT sha256 FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [hashlib.sha256(m.path.read_bytes()).hexdigest() for m in copies]
    caplog.set_level("WARNING", logger="appliance.store.db")
    assert db.migrate(conn, copies) == [] and "changed after it was applied" not in caplog.text
    first = copies[0]
    first.path.write_text(first.path.read_text() + "\n-- edited by hand\n")
    assert db.migrate(conn, copies) == []
    assert f"migration {first.version:04d}_{first.name} changed after it was applied" in caplog.text


@dataclasses.dataclass(frozen=True)
class _Overtaken(db.Migration):
    """A migration that another process applies between our check and our transaction."""

    other_conn: object = None

    @property
    def sql(self) -> str:
        db.migrate(self.other_conn)  # the other process runs every migration first
        return super().sql


def test_migration_applied_meanwhile_by_another_process(tmp_path):
    # The UI server and a timer-started ``sync --once`` opening a fresh data folder at once.
    ours, theirs = db.connect(tmp_path / "x.db"), db.connect(tmp_path / "x.db")
    first, *rest = db.discover_migrations()
    raced = _Overtaken(first.version, first.name, first.path, other_conn=theirs)
    assert db.migrate(ours, [raced, *rest]) == []
    assert db.current_version(ours) == max(m.version for m in rest)


def test_open_database_refuses_a_file_that_is_not_sqlite(tmp_path):
    db.database_path(tmp_path).write_bytes(b"not a database, just bytes " * 100)
    with pytest.raises(StoreError, match="Cannot open the database"):
        db.open_database(tmp_path)


def _copy_migrations(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for m in db.discover_migrations():
        shutil.copy(m.path, folder / m.path.name)
    return folder


def test_failing_migration_rolls_back_whole_file(tmp_path):
    folder = _copy_migrations(tmp_path)
    (folder / "0099_broken.sql").write_text("CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);\n")
    conn = db.connect(tmp_path / "x.db")
    with pytest.raises(StoreError, match="0099_broken"):
        db.migrate(conn, db.discover_migrations(folder))
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "half_done" not in tables and "outbox" in tables
    assert db.current_version(conn) == max(m.version for m in db.discover_migrations())


def test_newer_database_is_refused(tmp_path):
    folder = _copy_migrations(tmp_path)
    (folder / "0099_future.sql").write_text("CREATE TABLE future (x INTEGER);\n")
    conn = db.connect(tmp_path / "x.db")
    db.migrate(conn, db.discover_migrations(folder))
    with pytest.raises(StoreError, match="newer release"):
        db.migrate(conn)


def test_duplicate_versions_are_refused(tmp_path):
    folder = _copy_migrations(tmp_path)
    (folder / "0001_other.sql").write_text("SELECT 1;\n")
    with pytest.raises(StoreError, match="share version 1"):
        db.discover_migrations(folder)


def test_sequence_is_monotonic(tmp_path):
    conn = db.connect(tmp_path / "x.db")
    db.migrate(conn)
    with db.transaction(conn) as c:
        a, b = db.next_seq(c), db.next_seq(c)
    with pytest.raises(RuntimeError):
        with db.transaction(conn) as c:
            db.next_seq(c)
            raise RuntimeError("rolled back")
    with db.transaction(conn) as c:
        d = db.next_seq(c)
    assert a < b < d and d == b + 1  # a rolled-back draw is not consumed


def test_a_new_database_and_its_wal_files_are_owner_only(tmp_path):
    # docs/security.md: every file the store writes is 0600. The database holds patient IDs;
    # SQLite creates it (and gives -wal/-shm its mode) under the process umask, 0644 by default.
    old = os.umask(0o022)
    try:
        conn = db.open_database(tmp_path)
        with db.transaction(conn):
            conn.execute("INSERT INTO store_counter (name, value) VALUES ('x', 1)")
    finally:
        os.umask(old)
    names = [db.DB_NAME, db.DB_NAME + "-wal", db.DB_NAME + "-shm"]
    modes = {n: oct((tmp_path / n).stat().st_mode & 0o777) for n in names}
    conn.close()
    assert modes == {n: "0o600" for n in names}


def _plans(conn, action) -> dict[str, list[str]]:
    """Run ``action()`` and return the query plan of each SELECT it ran (SQL with its values)."""
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        action()
    finally:
        conn.set_trace_callback(None)
    return {sql: [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            for sql in statements if sql.lstrip().upper().startswith("SELECT")}


def test_the_queries_of_the_pages_read_by_index_not_by_scanning_the_outbox(tmp_path):
    """Every query the worklist, results, Sync page, import check and retention pass make finds its
    rows through an index: scanning the outbox or the images for each study made a year's store
    (15,000 studies, 75,000 outbox items) take seconds per page and made retention quadratic."""
    from appliance.store import annotations, retention
    from appliance.store.store import Store
    from store.helpers import add_study, make_config

    store = Store(make_config(tmp_path / "data"))
    studies = [add_study(store, k, patient=f"P{k}") for k in range(4)]
    for item in store.outbox(study_id=studies[0].id):
        store.claim(item.id)
        store.record_delivered(item.id)
    conn = store.connection
    actions = {
        "worklist": lambda: store.worklist(limit=50),
        "worklist of a patient": lambda: store.worklist(limit=50, patient_id="P2"),
        "study": lambda: store.get_study(studies[1].id),
        "re-import check": lambda: store.study_of_source("0" * 64),
        "sync status": store.sync_status,
        "retention": lambda: retention.expired_images(store),
        "study's items": lambda: store.outbox(study_id=studies[1].id),
        "annotations of a result": lambda: annotations._examples_of(store, studies[1].auto_result_id, {}),
    }
    # What may be walked whole: the studies in seq order (the worklist stops at its LIMIT), and
    # for retention the photographs once (each looked up by index, never the outbox per image).
    driving = {"worklist": "SCAN s USING INDEX sqlite_autoindex_studies_1", "retention": "SCAN i"}
    for name, action in actions.items():
        plans = _plans(conn, action)
        assert plans, name
        for sql, plan in plans.items():
            scans = [line for line in plan  # a table walked whole; "SCAN (subquery-1)" is one row
                     if line.startswith("SCAN ") and not line.startswith("SCAN (") and line != driving.get(name)]
            assert not scans, (name, sql, plan)
    store.close()
