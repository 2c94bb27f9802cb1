"""SQLite connection settings and the versioned migration runner.

The database runs in WAL mode with ``synchronous=FULL``: a committed transaction is on disk
when ``COMMIT`` returns, so a power cut after a study was acknowledged never loses it (WAL with
``NORMAL`` may lose the last transactions on power loss). Migrations are the numbered files
``appliance/store/migrations/NNNN_name.sql``; each is applied once, in order, inside one
``BEGIN IMMEDIATE`` transaction together with its row in ``schema_migrations``, so a crash mid-way
leaves the database at the previous version, never half-migrated.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from appliance.errors import StoreError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: The database file inside the data folder; the store, the UI and the sync all open this one.
DB_NAME = "glanceseg.db"
_MIGRATION_NAME = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One schema migration file."""

    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        """str: the file's SQL text."""
        return self.path.read_text(encoding="utf-8")

    @property
    def sha256(self) -> str:
        """str: hex sha256 of the file (recorded, so an edited applied migration is noticed)."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Return the migrations in ``directory`` sorted by version.

    Raises
    ------
    StoreError
        If two files share a version number.
    """
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            logger.warning("ignoring %s: not named NNNN_name.sql", path.name)
            continue
        version = int(match.group(1))
        if version in found:
            raise StoreError(f"Two migrations share version {version}: {found[version].path.name} and {path.name}.")
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


def database_path(data_dir: Path) -> Path:
    """Return the path of the appliance's database in ``data_dir``."""
    return Path(data_dir) / DB_NAME


def connect(path: Path, busy_timeout_s: float = 30.0) -> sqlite3.Connection:
    """Open the database with the appliance's durability settings.

    The connection is in autocommit mode (``isolation_level=None``); use :func:`transaction`
    for every write so that statements group explicitly.
    """
    conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"The database {path} cannot use write-ahead logging (journal mode {mode}).")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    return conn


def open_database(data_dir: Path, busy_timeout_s: float = 30.0) -> sqlite3.Connection:
    """Open the data folder's database and bring its schema up to date.

    Every process opens it this way (the UI server, the store, a ``sync --once`` from the timer),
    so whichever starts first on a fresh data folder creates the whole schema.

    Raises
    ------
    StoreError
        If the file cannot be opened or migrated.
    """
    conn: Optional[sqlite3.Connection] = None
    try:
        _create_owner_only(database_path(data_dir))
        conn = connect(database_path(data_dir), busy_timeout_s)
        migrate(conn)
    except BaseException as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"Cannot open the database in {data_dir}: {exc}.") from exc
        raise
    return conn


def _create_owner_only(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists.

    Why: SQLite creates a new database under the process umask (0644 by default) and gives its
    ``-wal`` and ``-shm`` files the database's mode; the database holds patient identifiers, and
    every other file of the store is 0600 (docs/security.md).
    """
    try:
        os.close(os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"Cannot create the database {path}: {exc.strerror or exc}.") from exc


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run a block in one ``BEGIN IMMEDIATE`` transaction: commit on success, roll back on error.

    Raises
    ------
    StoreError
        If SQLite cannot write (disk full, I/O error, lock timeout); nothing of the block is kept.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise StoreError(f"The database cannot be written: {exc}.") from exc
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                logger.warning("rollback failed after %s", type(exc).__name__)
        if isinstance(exc, sqlite3.OperationalError):
            raise StoreError(f"The database cannot be written: {exc}.") from exc
        raise


def current_version(conn: sqlite3.Connection) -> int:
    """Return the highest applied migration version (0 for an empty database)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, migrations: Optional[list[Migration]] = None) -> list[int]:
    """Apply every migration not yet applied, in order, each in its own transaction.

    Returns
    -------
    list[int]
        The versions applied by this call.

    Raises
    ------
    StoreError
        If the database holds a version this code does not know (a newer release wrote it), or a
        migration fails (the database then stays at the previous version).
    """
    migrations = discover_migrations() if migrations is None else migrations
    known = {m.version for m in migrations}
    current_version(conn)
    applied = {int(r[0]): r[1] for r in conn.execute("SELECT version, sha256 FROM schema_migrations")}
    unknown = sorted(set(applied) - known)
    if unknown:
        raise StoreError(
            f"The database was written by a newer release (schema version(s) {unknown} unknown here); "
            "refusing to open it."
        )
    done = []
    for migration in migrations:
        if migration.version in applied:
            if applied[migration.version] != migration.sha256:
                logger.warning("migration %04d_%s changed after it was applied", migration.version, migration.name)
            continue
        script = (
            "BEGIN IMMEDIATE;\n"
            + migration.sql
            + "\n;INSERT INTO schema_migrations (version, name, sha256, applied_at) "
            + f"VALUES ({migration.version}, '{migration.name}', '{migration.sha256}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));\n"
            + "COMMIT;"
        )
        try:
            conn.executescript(script)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if _recorded(conn, migration):
                # Another process (the UI and a timer-started sync on a fresh data folder) applied
                # it between our check and our BEGIN IMMEDIATE; its transaction is the one kept.
                logger.info("migration %04d_%s was applied by another process", migration.version, migration.name)
                continue
            raise StoreError(f"Migration {migration.path.name} failed: {exc}.") from exc
        logger.info("applied migration %04d_%s", migration.version, migration.name)
        done.append(migration.version)
    return done


def _recorded(conn: sqlite3.Connection, migration: Migration) -> bool:
    """Return whether ``schema_migrations`` holds ``migration``."""
    row = conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)).fetchone()
    return row is not None


def next_seq(conn: sqlite3.Connection) -> int:
    """Draw the next value of the store's monotonic sequence (call inside a transaction)."""
    row = conn.execute("UPDATE store_counter SET value = value + 1 WHERE name = 'seq' RETURNING value").fetchone()
    return int(row[0])
