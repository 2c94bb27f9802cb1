"""The audit log's hash chain on a long log: checked incrementally, tampering still found."""

from __future__ import annotations

import pytest

from appliance.store import db as store_db
from appliance.ui import audit as audit_module
from appliance.ui.audit import AuditLog


@pytest.fixture
def log(tmp_path):
    conn = store_db.open_database(tmp_path)
    yield AuditLog(conn)
    conn.close()


@pytest.fixture
def hashed(monkeypatch):
    """Count the entries hashed (calls of entry_hash made by verify)."""
    calls = []
    real = audit_module.entry_hash

    def counting(*args):
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(audit_module, "entry_hash", counting)
    return calls


def _append(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append("drsmith", "decide", f"result:{i}", {"lesion": i})


def test_a_long_chain_is_rehashed_only_where_it_grew(log, hashed):
    """The first check hashes every entry; the next hashes the new ones (plus the last one it
    verified), not the whole year again; "Check the whole log" hashes everything."""
    _append(log, 300)
    hashed.clear()
    assert log.verify() is None and len(hashed) == 300
    _append(log, 5)
    hashed.clear()
    assert log.verify() is None
    assert sorted(hashed) == [300, 301, 302, 303, 304, 305]
    hashed.clear()
    assert log.verify(full=True) is None and len(hashed) == 305


def test_tampering_is_found_after_an_incremental_check(log):
    """An entry changed after the last check, or the last entry checked, or entries removed from
    the end, are reported; changing an old one through SQLite needs the triggers dropped, which
    makes the next check walk the whole chain."""
    conn = log.conn
    _append(log, 20)
    assert log.verify() is None
    _append(log, 5)
    conn.execute("DROP TRIGGER ui_audit_no_update")
    conn.execute("UPDATE ui_audit SET actor = 'mallory' WHERE seq = 23")
    assert log.verify() == 23
    conn.execute("UPDATE ui_audit SET actor = 'drsmith' WHERE seq = 23")
    assert log.verify() is None
    conn.execute("UPDATE ui_audit SET target = 'x' WHERE seq = 3")  # triggers still gone: whole chain walked
    assert log.verify() == 3
    conn.execute("UPDATE ui_audit SET target = 'result:2' WHERE seq = 3")
    assert log.verify() is None
    conn.execute("DROP TRIGGER ui_audit_no_delete")
    conn.execute("DELETE FROM ui_audit WHERE seq >= 24")  # the tail: the rest still chains
    assert log.verify() == 25
