"""The UI's connection to the appliance's SQLite database.

The store (``appliance.store``) owns the database file and its migration runner. Until the UI
is wired to it, :func:`connect` opens the same WAL database and applies the UI's own migration
(``0002_ui.sql``, idempotent) so users and the audit log exist on a fresh data folder.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

logger = logging.getLogger(__name__)

MIGRATION = Path(__file__).resolve().parent.parent / "store" / "migrations" / "0002_ui.sql"
#: File name used when the store package offers no path of its own (swap when it does).
DB_NAME = "glanceseg.db"


def database_path(data_dir: Path) -> Path:
    """Return the database file inside ``data_dir``, preferring the store's own choice."""
    try:  # the store helper's public API, when present
        from appliance.store import database_path as store_path  # type: ignore[attr-defined]
    except ImportError:
        return Path(data_dir) / DB_NAME
    return Path(store_path(data_dir))


def connect(db_path: Path) -> sqlite3.Connection:
    """Open a connection in WAL mode with foreign keys on and a busy timeout.

    One connection per request/thread: SQLite connections must not be shared across the
    waitress worker threads.
    """
    conn = sqlite3.connect(str(db_path), timeout=15.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def ensure_schema(db_path: Path) -> None:
    """Create the UI tables if missing (idempotent; safe beside the store's runner)."""
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    conn = connect(db_path)
    try:
        conn.executescript(MIGRATION.read_text(encoding="utf-8"))
    finally:
        conn.close()
    logger.info("UI schema ready in %s", db_path)
