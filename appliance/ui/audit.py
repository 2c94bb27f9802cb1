"""The append-only, hash-chained audit log: who did what, when.

Each entry stores the hash of the previous one and its own hash over its content, so editing,
deleting or reordering any entry breaks :meth:`AuditLog.verify`. SQLite triggers refuse UPDATE
and DELETE; the chain catches what bypasses SQLite (a file edited directly).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

logger = logging.getLogger(__name__)

GENESIS = "0" * 64

#: Per database file, the last entry this process found the chain intact up to: ``(seq, hash)``.
_checkpoints: dict[str, tuple[int, str]] = {}
_checkpoints_lock = threading.Lock()


@dataclass(frozen=True)
class AuditEntry:
    """One row of ``ui_audit``."""

    seq: int
    at: str
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


def detail_text(detail: dict[str, Any]) -> str:
    """An entry's detail as an admin reads it: ``lesion 3; source model``, not a JSON object.

    Lists read as comma-separated values; anything deeper stays compact JSON (it is rare, and
    the stored JSON, which the hash chain covers, is unchanged).
    """
    def value(v: Any) -> str:
        if isinstance(v, str):
            return v
        if isinstance(v, list) and all(not isinstance(i, (list, dict)) for i in v):
            return ", ".join(value(i) for i in v)
        return json.dumps(v, ensure_ascii=False, separators=(", ", ": "))

    return "; ".join(f"{k.replace('_', ' ')} {value(v)}" for k, v in detail.items())


def entry_hash(prev_hash: str, seq: int, at: str, actor: str, action: str, target: str, detail_json: str) -> str:
    """Return the sha256 hex digest that chains an entry to its predecessor."""
    payload = json.dumps([prev_hash, seq, at, actor, action, target, detail_json], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


class AuditLog:
    """Append and read audit entries over one SQLite connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def append(self, actor: str, action: str, target: str = "", detail: Optional[dict[str, Any]] = None) -> AuditEntry:
        """Append one entry; serialised by an IMMEDIATE transaction so the chain never forks.

        ``detail`` must never contain patient identifiers (pseudonymous study ids only).
        """
        detail_json = json.dumps(detail or {}, sort_keys=True, separators=(",", ":"))
        at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            last = self.conn.execute("SELECT seq, hash FROM ui_audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq = 1 if last is None else last["seq"] + 1
            prev = GENESIS if last is None else last["hash"]
            digest = entry_hash(prev, seq, at, actor, action, target, detail_json)
            self.conn.execute(
                "INSERT INTO ui_audit(seq, at, actor, action, target, detail, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
                (seq, at, actor, action, target, detail_json, prev, digest),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        logger.debug("audit %s %s", action, target)
        return AuditEntry(seq, at, actor, action, target, detail or {}, prev, digest)

    def entries(self, limit: int = 500, offset: int = 0) -> list[AuditEntry]:
        """Return entries, newest first."""
        rows = self.conn.execute(
            "SELECT * FROM ui_audit ORDER BY seq DESC LIMIT ? OFFSET ?", (limit, offset)
        ).fetchall()
        return [
            AuditEntry(r["seq"], r["at"], r["actor"], r["action"], r["target"], json.loads(r["detail"]), r["prev_hash"], r["hash"])
            for r in rows
        ]

    def verify(self, full: bool = False) -> Optional[int]:
        """Check the chain: the entries added since this process last found it intact, or all of it.

        Why incremental: a busy station appends ~90,000 entries a year, and re-hashing all of them
        on every view of the audit page took about a second after one year, growing for ever. The
        whole chain is still walked on the first check in a process (each start), with ``full``
        (the page's "Check the whole log"), when the remembered last entry no longer verifies,
        and when the append-only triggers are gone (changing an old entry through SQLite needs
        them dropped first).

        Returns
        -------
        int or None
            The ``seq`` of the first entry that does not verify, or None when the chain is intact.
        """
        key = self._database_key()
        with _checkpoints_lock:
            checkpoint = None if full else _checkpoints.get(key)
        start, gone = (GENESIS, 1), None
        if checkpoint is not None:
            seq, digest = checkpoint
            r = self.conn.execute("SELECT * FROM ui_audit WHERE seq = ?", (seq,)).fetchone()
            if r is None:
                gone = seq  # an entry this process saw intact was removed (the chain's tail, maybe)
            elif self._triggers_present() and r["hash"] == digest == entry_hash(
                    r["prev_hash"], r["seq"], r["at"], r["actor"], r["action"], r["target"], r["detail"]):
                start = (digest, seq + 1)
        broken, last = self._walk(*start)
        if broken is not None and start[1] > 1:
            broken, last = self._walk(GENESIS, 1)  # name the first broken entry of the whole chain
        if broken is None and gone is not None:
            broken = gone
        with _checkpoints_lock:
            if broken is None and last is not None:
                _checkpoints[key] = last
            elif broken is not None:
                _checkpoints.pop(key, None)
        return broken

    def _walk(self, prev: str, expected_seq: int) -> tuple[Optional[int], Optional[tuple[int, str]]]:
        """Hash the entries from ``expected_seq`` on, chained to ``prev``.

        Returns ``(first broken seq or None, (seq, hash) of the last entry or None)``.
        """
        last: Optional[tuple[int, str]] = None
        for r in self.conn.execute("SELECT * FROM ui_audit WHERE seq >= ? ORDER BY seq", (expected_seq,)):
            digest = entry_hash(prev, r["seq"], r["at"], r["actor"], r["action"], r["target"], r["detail"])
            if r["seq"] != expected_seq or r["prev_hash"] != prev or r["hash"] != digest:
                return int(r["seq"]), last
            prev = r["hash"]
            last = (int(r["seq"]), prev)
            expected_seq += 1
        return None, last

    def _database_key(self) -> str:
        """The file of the connection's main database (the checkpoint is per database file)."""
        for r in self.conn.execute("PRAGMA database_list"):
            if r[1] == "main":
                return str(r[2])
        return ""

    def _triggers_present(self) -> bool:
        """Whether both append-only triggers still exist."""
        n = self.conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'"
                              " AND name IN ('ui_audit_no_update', 'ui_audit_no_delete')").fetchone()[0]
        return int(n) == 2
