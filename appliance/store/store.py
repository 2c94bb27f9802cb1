"""The local store: studies, photographs, results, decisions and the outbox.

One :class:`Store` per process, shared by threads (calls are serialised by a lock; several
processes share the database through SQLite's WAL locking). Every write follows the same order:
check space, write files atomically, then commit the rows naming them in one transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from appliance.config import Config
from appliance.errors import StoreError
from appliance.store import db, files
from appliance.store.results import utc_now
from appliance.store.records import (ImageRecord, OutboxKind, ResultRecord, StudyRecord, check_study_keys,
                                     new_uid)
from appliance.store._decisions import DecisionsMixin
from appliance.store._outbox import OutboxMixin
from appliance.store.results import StoredResult, build_result_files, load_stored_result

logger = logging.getLogger(__name__)

WRITE_LOCK = "store.lock"
#: Folder of write-intent marks: each write to ``studies/`` holds one while its files exist
#: without their rows. A mark left there is a crashed write, and only then does opening the
#: store walk ``studies/`` for orphans (a year of a busy clinic is 75,000 files: 2-3 s on every
#: command, sync timer run and start).
WRITE_MARKS = "writes"
#: The sync pass's lock (``flock``, exclusive; :func:`appliance.sync.engine.sync_lock`). The store
#: takes it only to sweep ``outbox/``, so a running pass never loses the file it is about to send.
SYNC_LOCK = "sync.lock"
#: A temporary file in ``outbox/`` younger than this may be a build in progress (see _sweep_orphans).
OUTBOX_TMP_MIN_AGE_S = 600.0



class Store(DecisionsMixin, OutboxMixin):
    """The appliance's local store on ``config.data_dir``.

    Parameters
    ----------
    config
        The appliance configuration (``data`` section used).

    Raises
    ------
    StoreError
        If the data folder cannot be created or the database cannot be opened or migrated.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.data_dir
        try:
            files.makedirs_durable(self.root)
        except OSError as exc:
            raise StoreError(f"Cannot create the data folder {self.root}: {exc.strerror or exc}.") from exc
        self._lock = threading.RLock()
        self._change_listeners: list[Any] = []
        self._conn = db.open_database(self.root, config.data.busy_timeout_s)
        self._sweep_orphans()

    def add_change_listener(self, listener: Any) -> None:
        """Call ``listener()`` after a study or a sign-off is queued (the LEDs, the UI's badge)."""
        self._change_listeners.append(listener)

    def _changed(self) -> None:
        for listener in list(self._change_listeners):
            try:
                listener()
            except Exception:  # noqa: BLE001 - a broken listener must never fail a stored study
                logger.exception("store change listener failed")

    # -- crash leftovers ------------------------------------------------------------------
    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the shared write lock while files are written and their rows committed.

        Writers in any process share it; :meth:`_sweep_orphans` takes it exclusively, so it never
        removes the files of a study another process is about to commit.
        """
        fd = os.open(str(self.root / WRITE_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        mark: Optional[Path] = None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            marks = self.root / WRITE_MARKS
            files.makedirs_durable(marks)
            mark = marks / f"{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"
            os.close(os.open(str(mark), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            files.fsync_dir(marks)  # on disk before any file it stands for
            yield
        finally:
            if mark is not None:
                with contextlib.suppress(OSError):  # a mark left over costs one walk at the next open
                    os.unlink(mark)
            os.close(fd)

    def _remove_uncommitted(self, relpaths: list[str]) -> None:
        """Remove the files of a write whose transaction failed, unless a row names them.

        The check matters only when the exception came after the COMMIT (a KeyboardInterrupt
        between two bytecodes): then the files belong to a stored study and must stay. If even the
        check fails, everything is left to the next start's sweep.
        """
        marks = ",".join("?" * len(relpaths))
        try:
            named = {r[0] for r in self._q(
                f"SELECT path FROM images WHERE path IN ({marks}) UNION SELECT json_path FROM results"
                f" WHERE json_path IN ({marks}) UNION SELECT masks_path FROM results WHERE masks_path IN ({marks})",
                [*relpaths, *relpaths, *relpaths])}
        except Exception as exc:  # noqa: BLE001 - never mask the original error
            logger.warning("files of a failed write left for the next sweep: %s", exc)
            return
        files.remove_all_quietly([self.path(r) for r in relpaths if r not in named])

    def _sweep_orphans(self) -> None:
        """Remove what a crash left: temporary files, built DICOM files nothing will send, and study
        files no row names.

        ``studies/`` is walked only when a write-intent mark (:data:`WRITE_MARKS`) shows that a
        write was cut short, or when there is no marks folder yet (a store from before the marks,
        or a new one): taken exclusively, the write lock means no write is under way, so every
        mark left is a crashed one.
        """
        self.sweep_built_files()
        with files.exclusive_lock(self.root / WRITE_LOCK) as held:
            if not held:
                return  # another process is writing; the next start sweeps
            # A DICOM build (sync pass or USB export, in any process) writes outbox/.<SOP>.dcm.<pid>.part
            # without the store's write lock, so a .part there may be in use right now: removing
            # it would fail that upload. A build takes seconds; one untouched for 10 minutes was
            # left by a crash. (A clock set back keeps it until the clock catches up: harmless.)
            files.sweep_temporaries(self.root / "outbox", min_age_s=OUTBOX_TMP_MIN_AGE_S)
            marks = self.root / WRITE_MARKS
            left = list(marks.iterdir()) if marks.is_dir() else None
            if left == []:
                return  # every write since the last sweep finished (or failed and cleaned up)
            self._sweep_studies()
            files.makedirs_durable(marks)
            for mark in left or []:
                files.remove_durable(mark)

    def _sweep_studies(self) -> None:
        """Remove the temporaries and the files no row names under ``studies/`` (write lock held)."""
        studies = self.root / "studies"
        if not studies.exists():
            return
        files.sweep_temporaries(studies)
        named = {r[0] for r in self._q("SELECT path FROM images UNION SELECT json_path FROM results"
                                      " UNION SELECT masks_path FROM results")}
        removed = 0
        for path in studies.rglob("*"):
            if path.is_file() and path.relative_to(self.root).as_posix() not in named:
                files.remove_durable(path)
                removed += 1
        for folder in studies.iterdir():
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if removed:
            logger.info("removed %d file(s) of studies an interrupted write never committed", removed)

    def sweep_built_files(self) -> int:
        """Remove every ``outbox/*.dcm`` that no undelivered item names; return how many.

        A built file is a full DICOM copy of the photograph with the patient ID. The sync pass
        removes it after recording the delivery; a pass killed between the two leaves it, and
        nothing else would ever remove it, not even retention. This runs only while holding the
        sync lock, taken without waiting (skipped if a pass holds it), so it never removes the
        file a running pass is about to send. The folder is listed before the rows are read: a
        file is built only after its item was committed, so every listed file of an undelivered
        item is in ``keep`` (a USB export may build one without the sync lock).
        """
        outbox = self.root / "outbox"
        if not outbox.is_dir():
            return 0
        with files.exclusive_lock(self.root / SYNC_LOCK) as held:
            if not held:
                logger.debug("a sync pass is running; built files are swept next time")
                return 0
            built = sorted(outbox.glob("*.dcm"))
            keep: set[str] = set()
            for r in self._q("SELECT sop_uid, path FROM outbox WHERE state IN ('pending', 'sending')"):
                keep.add(f"{r['sop_uid']}.dcm")
                if r["path"]:
                    keep.add(Path(r["path"]).name)
            removed = 0
            for path in built:
                if path.name not in keep:
                    files.remove_durable(path)
                    removed += 1
            if removed:
                logger.info("removed %d built DICOM file(s) of delivered or unknown items", removed)
            return removed

    # -- plumbing -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """sqlite3.Connection: the shared connection (other areas' tables: 0002, 0003)."""
        return self._conn

    def path(self, relative: str) -> Path:
        """Return the absolute path of a file the store names relative to the data folder."""
        return self.root / relative

    def _q(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, tuple(args)).fetchall()

    # -- studies --------------------------------------------------------------------------
    def add_study(
        self,
        photo: Any,
        patient_id: str,
        eye: str,
        result: Any,
        gaze_summary: Optional[dict[str, Any]] = None,
    ) -> StudyRecord:
        """Store a photograph and its automatic result as a new study and queue it for delivery.

        Parameters
        ----------
        photo
            An ``appliance.imaging.io.Photograph`` (``rgb`` H×W×3 uint8, ``source``, ``sha256``,
            ``fov_deg``, ``dicom``).
        patient_id
            The clinic's patient identifier (never logged).
        eye
            ``"L"`` or ``"R"``.
        result
            The ``SegmentationResult`` of the photograph; its shown lesions form the mask.
        gaze_summary
            Optional JSON-able summary of the reader's gaze (samples, duration, ...).

        Returns
        -------
        StudyRecord

        Raises
        ------
        ValueError
            If the photograph is not H×W×3 uint8 or the result's size differs.
        StoreError
            If the patient ID or eye is not allowed (:func:`~appliance.store.records.check_study_keys`),
            if space is short (checked before anything is written) or a write fails.
        """
        patient_id, eye = check_study_keys(patient_id, eye)
        rgb = np.ascontiguousarray(photo.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("The photograph must be an H×W×3 uint8 array.")
        if (result.height, result.width) != rgb.shape[:2]:
            raise ValueError("The segmentation result's size differs from the photograph's.")
        files.check_space(self.root, int(rgb.nbytes * self.config.data.study_space_factor), self.config.data.min_free_mb)

        with self._writing():
            study = self._add_study(photo, patient_id, eye, result, gaze_summary, rgb)
        self._changed()
        return study

    def _add_study(self, photo, patient_id, eye, result, gaze_summary, rgb) -> StudyRecord:  # type: ignore[no-untyped-def]
        study_uid = new_uid()
        folder = f"studies/{study_uid}"
        import cv2  # local: only the store's write path needs it

        ok, png = cv2.imencode(".png", rgb[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise StoreError("The photograph could not be encoded for storage.")
        shown_ids = [int(l.id) for l in result.shown]
        payload = {"kind": "auto", "gaze": gaze_summary or {}}
        json_bytes, npz_bytes = build_result_files(result, shown_ids, payload)
        json_rel, masks_rel = f"{folder}/result-auto.json", f"{folder}/result-auto.npz"
        try:
            study_id = self._commit_study(folder, study_uid, photo, patient_id, eye, rgb, png.tobytes(), json_rel,
                                          json_bytes, masks_rel, npz_bytes, result, shown_ids)
        except BaseException:
            # Nothing names these files now (the transaction rolled back or never ran): remove them
            # at once, rather than leave them, on a full disk too, until another process opens the
            # store (the UI's process never does).
            self._remove_uncommitted([f"{folder}/photo.png", json_rel, masks_rel])
            with contextlib.suppress(OSError):  # its own new folder, unless it is not empty
                self.path(folder).rmdir()
            raise
        logger.info("stored study %d (%d lesions shown) and queued 3 instances", study_id, len(shown_ids))
        return self.get_study(study_id)

    def _commit_study(self, folder, study_uid, photo, patient_id, eye, rgb, png, json_rel, json_bytes, masks_rel,
                      npz_bytes, result, shown_ids) -> int:  # type: ignore[no-untyped-def]
        """Write a new study's files, then commit its rows; return the study's id.

        Nothing after the commit belongs here: on any exception the caller removes the files.
        """
        png_sha = files.atomic_write(self.path(f"{folder}/photo.png"), png)
        json_sha = files.atomic_write(self.path(json_rel), json_bytes)
        masks_sha = files.atomic_write(self.path(masks_rel), npz_bytes)

        now = utc_now()
        with self._lock, db.transaction(self._conn) as c:
            cur = c.execute(
                "INSERT INTO studies (seq, study_uid, patient_id, eye, created_at) VALUES (?, ?, ?, ?, ?)",
                (db.next_seq(c), study_uid, patient_id, eye, now),
            )
            study_id = int(cur.lastrowid)
            cur = c.execute(
                "INSERT INTO images (seq, study_id, path, sha256, source_sha256, source_name, width, height,"
                " fov_deg, camera_json, series_uid, sop_uid, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    db.next_seq(c), study_id, f"{folder}/photo.png", png_sha, str(getattr(photo, "sha256", "")),
                    str(getattr(photo, "source", "")), rgb.shape[1], rgb.shape[0], getattr(photo, "fov_deg", None),
                    json.dumps(getattr(photo, "dicom", {}) or {}, sort_keys=True, default=str), new_uid(), new_uid(), now,
                ),
            )
            image_id = int(cur.lastrowid)
            result_id = self._insert_result(
                c, study_id, image_id, "auto", None, json_rel, json_sha, masks_rel, masks_sha, result, len(shown_ids),
                None, None, None, now,
            )
            self._enqueue(c, study_id, image_id, None, OutboxKind.PHOTO, study_uid, now)
            self._enqueue(c, study_id, image_id, result_id, OutboxKind.SEG, study_uid, now)
            self._enqueue(c, study_id, image_id, result_id, OutboxKind.SR, study_uid, now)
        return study_id

    def _insert_result(self, c, study_id, image_id, kind, based_on, json_rel, json_sha, masks_rel, masks_sha,
                       result, count, grade, referral, signed_by, now) -> int:  # type: ignore[no-untyped-def]
        cur = c.execute(
            "INSERT INTO results (seq, study_id, image_id, kind, based_on, json_path, json_sha256, masks_path,"
            " masks_sha256, mode, model_name, model_sha256, lesion_count, grade, referral, signed_by, created_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                db.next_seq(c), study_id, image_id, kind, based_on, json_rel, json_sha, masks_rel, masks_sha,
                result.mode, result.model_name, result.model_sha256, count, grade, referral, signed_by, now,
            ),
        )
        return int(cur.lastrowid)

    def _enqueue(self, c, study_id, image_id, result_id, kind: OutboxKind, study_uid, now) -> None:  # type: ignore[no-untyped-def]
        if kind is OutboxKind.PHOTO:
            image = c.execute("SELECT series_uid, sop_uid FROM images WHERE id = ?", (image_id,)).fetchone()
            series_uid, sop_uid = image["series_uid"], image["sop_uid"]
        else:
            series_uid, sop_uid = new_uid(), new_uid()
        key = f"{study_uid}/{kind.value}/{result_id or image_id}"
        c.execute(
            "INSERT INTO outbox (seq, idempotency_key, study_id, image_id, result_id, kind, study_uid, series_uid,"
            " sop_uid, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (db.next_seq(c), key, study_id, image_id, result_id, kind.value, study_uid, series_uid, sop_uid, now),
        )

    _STUDY_SQL = (
        "SELECT s.*, i.id AS image_id,"
        " (SELECT id FROM results r WHERE r.study_id = s.id AND r.kind = 'auto' ORDER BY seq LIMIT 1) AS auto_id,"
        " (SELECT id FROM results r WHERE r.study_id = s.id ORDER BY seq DESC LIMIT 1) AS latest_id,"
        " (SELECT COUNT(*) FROM results r WHERE r.study_id = s.id AND r.kind = 'reviewed') AS reviews,"
        " (SELECT COUNT(*) FROM outbox o WHERE o.study_id = s.id AND o.state != 'delivered') AS pending"
        " FROM studies s JOIN images i ON i.study_id = s.id"
    )

    @staticmethod
    def _study(row: sqlite3.Row) -> StudyRecord:
        return StudyRecord(
            id=row["id"], seq=row["seq"], study_uid=row["study_uid"], patient_id=row["patient_id"], eye=row["eye"],
            created_at=row["created_at"], image_id=row["image_id"], auto_result_id=row["auto_id"],
            latest_result_id=row["latest_id"], reviewed=bool(row["reviews"]),
            delivery="pending" if row["pending"] else "delivered", pending_items=int(row["pending"]),
        )

    def get_study(self, study_id: int) -> StudyRecord:
        """Return one study.

        Raises
        ------
        StoreError
            If there is no such study.
        """
        rows = self._q(self._STUDY_SQL + " WHERE s.id = ?", (study_id,))
        if not rows:
            raise StoreError(f"There is no study {study_id}.")
        return self._study(rows[0])

    def worklist(self, limit: int = 200, offset: int = 0, unreviewed_only: bool = False,
                 patient_id: Optional[str] = None) -> list[StudyRecord]:
        """Return studies newest first (by sequence, not by wall clock).

        ``patient_id`` keeps only that patient's studies (the exact ID, as stored): after a few
        days a station holds more studies than a page shows, and a patient's earlier visit is
        found by its ID (index ``studies_patient``).
        """
        conditions, args = [], []
        if unreviewed_only:
            conditions.append("NOT EXISTS (SELECT 1 FROM results r WHERE r.study_id = s.id AND r.kind = 'reviewed')")
        if patient_id is not None:
            conditions.append("s.patient_id = ?")
            args.append(patient_id)
        where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
        rows = self._q(self._STUDY_SQL + where + " ORDER BY s.seq DESC LIMIT ? OFFSET ?", (*args, limit, offset))
        return [self._study(r) for r in rows]

    # -- images ---------------------------------------------------------------------------
    def get_image(self, image_id: int) -> ImageRecord:
        """Return the photograph record (``deleted_at`` set once retention removed the file)."""
        rows = self._q("SELECT * FROM images WHERE id = ?", (image_id,))
        if not rows:
            raise StoreError(f"There is no image {image_id}.")
        r = rows[0]
        return ImageRecord(
            id=r["id"], seq=r["seq"], study_id=r["study_id"], path=r["path"], sha256=r["sha256"],
            source_sha256=r["source_sha256"], source_name=r["source_name"], width=r["width"], height=r["height"],
            fov_deg=r["fov_deg"], camera=json.loads(r["camera_json"] or "{}"), series_uid=r["series_uid"],
            sop_uid=r["sop_uid"], created_at=r["created_at"], deleted_at=r["deleted_at"],
        )

    def study_of_source(self, source_sha256: str) -> Optional[StudyRecord]:
        """Return the first study made from the file with this sha256, or None (a re-import check)."""
        rows = self._q("SELECT study_id FROM images WHERE source_sha256 = ? ORDER BY seq LIMIT 1", (source_sha256,))
        return self.get_study(rows[0]["study_id"]) if rows else None

    def load_image_rgb(self, image_id: int) -> np.ndarray:
        """Return the stored photograph as H×W×3 uint8 RGB, verified against its sha256.

        Raises
        ------
        StoreError
            If retention removed it, or the file is missing or corrupt.
        """
        import cv2

        image = self.get_image(image_id)
        if image.deleted_at:
            raise StoreError(f"The photograph of image {image_id} was removed by the retention policy.")
        path = self.path(image.path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"The photograph file of image {image_id} is missing.") from exc
        import hashlib

        if hashlib.sha256(raw).hexdigest() != image.sha256:
            raise StoreError(f"The photograph file of image {image_id} is corrupt (checksum mismatch).")
        bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        return np.ascontiguousarray(bgr[:, :, ::-1])

    # -- results --------------------------------------------------------------------------
    def get_result(self, result_id: int) -> ResultRecord:
        """Return one result's record."""
        rows = self._q("SELECT * FROM results WHERE id = ?", (result_id,))
        if not rows:
            raise StoreError(f"There is no result {result_id}.")
        r = rows[0]
        return ResultRecord(
            id=r["id"], seq=r["seq"], study_id=r["study_id"], image_id=r["image_id"], kind=r["kind"],
            based_on=r["based_on"], mode=r["mode"], model_name=r["model_name"], model_sha256=r["model_sha256"],
            lesion_count=r["lesion_count"], grade=r["grade"], referral=r["referral"], signed_by=r["signed_by"],
            created_at=r["created_at"], json_path=r["json_path"], masks_path=r["masks_path"],
        )

    def results_for_study(self, study_id: int) -> list[ResultRecord]:
        """Return a study's results in the order they were made (automatic first)."""
        return [self.get_result(r["id"]) for r in self._q("SELECT id FROM results WHERE study_id = ? ORDER BY seq", (study_id,))]

    def load_result(self, result_id: int) -> StoredResult:
        """Return the result with its lesions, masks and payload, files verified by sha256."""
        rows = self._q("SELECT * FROM results WHERE id = ?", (result_id,))
        if not rows:
            raise StoreError(f"There is no result {result_id}.")
        r = rows[0]
        return load_stored_result(
            self.path(r["json_path"]), r["json_sha256"], self.path(r["masks_path"]), r["masks_sha256"]
        )
