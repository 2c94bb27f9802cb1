"""A stand-in study store for the UI until it is wired to ``appliance.store``.

SWAP: the store helper's package owns studies, images, results, decisions, the outbox and
sign-off. This module keeps the same facts in ``uistub_*`` tables of the same database so the
UI can be built and tested now; :class:`StudyStore` is the seam (``Services.studies``) the lead
replaces with an adapter over the store's public API.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS uistub_studies (
    id INTEGER PRIMARY KEY, patient_id TEXT NOT NULL, eye TEXT NOT NULL CHECK (eye IN ('L','R')),
    status TEXT NOT NULL DEFAULT 'new', created_at TEXT NOT NULL, UNIQUE (patient_id, eye));
CREATE TABLE IF NOT EXISTS uistub_images (
    id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL REFERENCES uistub_studies(id),
    name TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, width INTEGER, height INTEGER,
    gradable INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uistub_lesions (
    image_id INTEGER NOT NULL, lesion_id INTEGER NOT NULL, x REAL, y REAL, area_px INTEGER,
    bbox TEXT, score REAL, source TEXT, decision TEXT, decided_by TEXT, decided_at TEXT,
    PRIMARY KEY (image_id, lesion_id));
CREATE TABLE IF NOT EXISTS uistub_signoffs (
    id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL, signed_by TEXT NOT NULL, signed_at TEXT NOT NULL,
    grade TEXT NOT NULL, maculopathy INTEGER, ungradable INTEGER NOT NULL, referral TEXT NOT NULL,
    model_name TEXT, model_sha256 TEXT, summary TEXT NOT NULL);
"""

STATUSES = ("new", "read", "pending_sync", "synced")


@dataclass
class StudyRow:
    """A study as the worklist shows it."""

    id: int
    patient_id: str
    eye: str
    status: str
    created_at: str
    images: list["ImageRow"] = field(default_factory=list)


@dataclass
class ImageRow:
    """A photograph of a study."""

    id: int
    study_id: int
    name: str
    path: str
    sha256: str
    width: int
    height: int
    gradable: bool


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via temp file + fsync + rename + fsync(dir), so a power cut leaves old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class StudyStore:
    """Studies, photographs, lesion decisions and sign-offs (stand-in; see module docstring).

    Parameters
    ----------
    conn
        Open connection (autocommit); photographs go under ``data_dir/photographs``.
    """

    def __init__(self, conn: sqlite3.Connection, data_dir: Path) -> None:
        self.conn = conn
        self.data_dir = Path(data_dir)
        conn.executescript(SCHEMA)

    def add_photograph(self, patient_id: str, eye: str, name: str, raw: bytes, sha256: str,
                       width: int, height: int, gradable: bool) -> ImageRow:
        """Store a validated photograph under its study (created when new); file first, then row."""
        cur = self.conn.execute("SELECT id FROM uistub_studies WHERE patient_id=? AND eye=?", (patient_id, eye)).fetchone()
        study_id = cur["id"] if cur else self.conn.execute(
            "INSERT INTO uistub_studies(patient_id, eye, created_at) VALUES (?,?,?)", (patient_id, eye, _now())
        ).lastrowid
        suffix = Path(name).suffix.lower() or ".img"
        path = self.data_dir / "photographs" / f"{sha256}{suffix}"
        if not path.exists():
            _atomic_write(path, raw)
        image_id = self.conn.execute(
            "INSERT INTO uistub_images(study_id, name, path, sha256, width, height, gradable, created_at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (study_id, name, str(path), sha256, width, height, int(gradable), _now()),
        ).lastrowid
        return self.image(int(image_id))  # type: ignore[return-value]

    def studies(self) -> list[StudyRow]:
        """Return every study with its photographs, newest first."""
        out = []
        for r in self.conn.execute("SELECT * FROM uistub_studies ORDER BY id DESC").fetchall():
            out.append(self.study(r["id"]))
        return [s for s in out if s is not None]

    def study(self, study_id: int) -> Optional[StudyRow]:
        """Return one study, or None."""
        r = self.conn.execute("SELECT * FROM uistub_studies WHERE id=?", (study_id,)).fetchone()
        if r is None:
            return None
        imgs = [self._image_row(i) for i in self.conn.execute(
            "SELECT * FROM uistub_images WHERE study_id=? ORDER BY id", (study_id,)).fetchall()]
        return StudyRow(r["id"], r["patient_id"], r["eye"], r["status"], r["created_at"], imgs)

    def image(self, image_id: int) -> Optional[ImageRow]:
        """Return one photograph, or None."""
        r = self.conn.execute("SELECT * FROM uistub_images WHERE id=?", (image_id,)).fetchone()
        return None if r is None else self._image_row(r)

    @staticmethod
    def _image_row(r: sqlite3.Row) -> ImageRow:
        return ImageRow(r["id"], r["study_id"], r["name"], r["path"], r["sha256"], r["width"], r["height"], bool(r["gradable"]))

    def set_status(self, study_id: int, status: str) -> None:
        """Move a study to ``status`` (one of :data:`STATUSES`)."""
        if status not in STATUSES:
            raise ValueError(f"Unknown study status {status!r}.")
        self.conn.execute("UPDATE uistub_studies SET status=? WHERE id=?", (status, study_id))

    def mark_read(self, study_id: int) -> None:
        """A clinician opened the study: new -> read (later states are kept)."""
        self.conn.execute("UPDATE uistub_studies SET status='read' WHERE id=? AND status='new'", (study_id,))

    def save_lesion(self, image_id: int, lesion: dict[str, Any]) -> None:
        """Insert or update a lesion the pipeline emitted, keeping any decision already made."""
        self.conn.execute(
            "INSERT INTO uistub_lesions(image_id, lesion_id, x, y, area_px, bbox, score, source) VALUES (?,?,?,?,?,?,?,?)"
            " ON CONFLICT(image_id, lesion_id) DO UPDATE SET x=excluded.x, y=excluded.y, area_px=excluded.area_px,"
            " bbox=excluded.bbox, score=excluded.score, source=excluded.source",
            (image_id, lesion["id"], lesion["x"], lesion["y"], lesion["area_px"], json.dumps(lesion["bbox"]),
             lesion["score"], lesion["source"]),
        )

    def decide(self, image_id: int, lesion_id: int, decision: Optional[str], user: str) -> None:
        """Record accepted / rejected / added / withdrawn (an undone add), or None to undo."""
        if decision not in (None, "accepted", "rejected", "added", "withdrawn"):
            raise ValueError(f"Unknown decision {decision!r}.")
        self.conn.execute(
            "UPDATE uistub_lesions SET decision=?, decided_by=?, decided_at=? WHERE image_id=? AND lesion_id=?",
            (decision, user, _now(), image_id, lesion_id),
        )

    def lesions(self, image_id: int) -> list[dict[str, Any]]:
        """Return the image's lesions with their decisions."""
        rows = self.conn.execute("SELECT * FROM uistub_lesions WHERE image_id=? ORDER BY lesion_id", (image_id,)).fetchall()
        return [{"id": r["lesion_id"], "x": r["x"], "y": r["y"], "area_px": r["area_px"], "bbox": json.loads(r["bbox"]),
                 "score": r["score"], "source": r["source"], "decision": r["decision"]} for r in rows]

    def sign_off(self, study_id: int, user: str, grade: str, maculopathy: Optional[bool], ungradable: bool,
                 referral: str, model_name: str, model_sha256: str, summary: dict[str, Any]) -> int:
        """Record the clinician's grade and queue the reviewed result (status pending_sync)."""
        sid = self.conn.execute(
            "INSERT INTO uistub_signoffs(study_id, signed_by, signed_at, grade, maculopathy, ungradable, referral,"
            " model_name, model_sha256, summary) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (study_id, user, _now(), grade, None if maculopathy is None else int(maculopathy), int(ungradable),
             referral, model_name, model_sha256, json.dumps(summary)),
        ).lastrowid
        self.set_status(study_id, "pending_sync")
        return int(sid)

    def last_signoff(self, study_id: int) -> Optional[dict[str, Any]]:
        """Return the latest sign-off of a study, or None."""
        r = self.conn.execute("SELECT * FROM uistub_signoffs WHERE study_id=? ORDER BY id DESC LIMIT 1", (study_id,)).fetchone()
        return None if r is None else dict(r)

    def pending_count(self) -> int:
        """int: studies signed off and not yet synced."""
        return int(self.conn.execute("SELECT COUNT(*) FROM uistub_studies WHERE status='pending_sync'").fetchone()[0])
