"""Clinicians' decisions on lesions (append-only, with undo) and the sign-off of a review."""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from typing import Any, Optional

import numpy as np

from appliance.errors import StoreError
from appliance.glance.lesions import Lesion
from appliance.store import db, files
from appliance.store.records import Decision, DecisionRecord, OutboxKind, ResultRecord
from appliance.store.results import build_result_files, final_lesions, utc_now

logger = logging.getLogger(__name__)

#: Ids of lesions a clinician adds start here, so they never collide with the model's ids.
ADDED_ID_BASE = 1_000_000

#: Why a sign-off is refused once retention removed the study's photograph.
PHOTO_REMOVED = "The photograph of this study was removed by the retention policy; amend it on the PACS."


class DecisionsMixin:
    """Decision log and sign-off; mixed into :class:`appliance.store.store.Store`."""

    def _auto_result_row(self, result_id: int) -> Any:
        rows = self._q("SELECT * FROM results WHERE id = ?", (result_id,))  # type: ignore[attr-defined]
        if not rows:
            raise StoreError(f"There is no result {result_id}.")
        if rows[0]["kind"] != "auto":
            raise StoreError("Decisions are recorded on the automatic result, not on a signed review.")
        return rows[0]

    def decide(self, result_id: int, lesion_id: int, action: str, actor: str) -> DecisionRecord:
        """Record a clinician's ``"accept"`` or ``"reject"`` of one lesion of an automatic result.

        Raises
        ------
        ValueError
            If the action is not accept or reject.
        StoreError
            If the result or lesion does not exist.
        """
        action = Decision(action).value
        if action not in ("accept", "reject"):
            raise ValueError("Use add_lesion() to add a lesion and undo() to undo a decision.")
        self._auto_result_row(result_id)
        known = {int(l.id) for l in self.load_result(result_id).result.lesions}  # type: ignore[attr-defined]
        known |= {d.lesion_id for d in self.decisions(result_id) if d.action == "add"}
        if int(lesion_id) not in known:
            raise StoreError(f"Result {result_id} has no lesion {lesion_id}.")
        return self._insert_decision(result_id, int(lesion_id), action, None, actor, None, None)

    def add_lesion(
        self, result_id: int, x: float, y: float, actor: str, radius_px: float = 6.0,
        mask: Optional[np.ndarray] = None, bbox: Optional[tuple[int, int, int, int]] = None,
    ) -> DecisionRecord:
        """Record a lesion the clinician marked that the model missed.

        Parameters
        ----------
        x, y
            Centre in image px.
        radius_px
            Radius of the disc used as its mask when ``mask`` is None.
        mask, bbox
            Optional boolean crop and its ``(x0, y0, x1, y1)`` box in image px.

        Raises
        ------
        StoreError
            If ``(x, y)`` is not a point of the photograph (the UI refuses such a tap; an
            integrator's call gets the same plain answer, not an empty-array error).
        """
        row = self._auto_result_row(result_id)
        image = self.get_image(row["image_id"])  # type: ignore[attr-defined]
        if not (0.0 <= float(x) < image.width and 0.0 <= float(y) < image.height):  # NaN fails too
            raise StoreError(f"({x}, {y}) is not a point of the {image.width}×{image.height} px photograph.")
        if mask is None:
            r = max(1.0, float(radius_px))
            x0, y0 = max(0, int(np.floor(x - r))), max(0, int(np.floor(y - r)))
            x1, y1 = min(image.width, int(np.ceil(x + r)) + 1), min(image.height, int(np.ceil(y + r)) + 1)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            mask = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
            bbox = (x0, y0, x1, y1)
        elif bbox is None:
            raise ValueError("A mask needs its bbox.")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (bbox[3] - bbox[1], bbox[2] - bbox[0]):
            raise ValueError("The mask's shape does not match its bbox.")
        lesion = {"x": float(x), "y": float(y), "bbox": [int(v) for v in bbox], "area_px": int(mask.sum()),
                  "shape": list(mask.shape)}
        return self._insert_decision(result_id, None, "add", None, actor, lesion, np.packbits(mask).tobytes())

    def undo(self, result_id: int, actor: str) -> Optional[DecisionRecord]:
        """Undo ``actor``'s latest decision on a result not undone yet; None when there is nothing to undo.

        Only the actor's own: with two clinicians on one photograph, an Undo must not take back
        the colleague's decision unseen.
        """
        self._auto_result_row(result_id)
        log = self.decisions(result_id)
        undone = {d.undoes for d in log if d.action == "undo"}
        for d in reversed(log):
            if d.action != "undo" and d.id not in undone and d.actor == actor:
                return self._insert_decision(result_id, d.lesion_id, "undo", d.id, actor, None, None)
        return None

    def _insert_decision(self, result_id, lesion_id, action, undoes, actor, lesion, mask) -> DecisionRecord:  # type: ignore[no-untyped-def]
        with self._lock, db.transaction(self._conn) as c:  # type: ignore[attr-defined]
            seq = db.next_seq(c)
            if lesion_id is None:  # an added lesion: its id derives from the sequence, unique forever
                lesion_id = ADDED_ID_BASE + seq
            cur = c.execute(
                "INSERT INTO decisions (seq, result_id, lesion_id, action, undoes, lesion_json, mask, actor, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (seq, result_id, lesion_id, action, undoes, json.dumps(lesion) if lesion else None, mask, actor, utc_now()),
            )
            decision_id = int(cur.lastrowid)
        return [d for d in self.decisions(result_id) if d.id == decision_id][0]

    def decisions(self, result_id: int) -> list[DecisionRecord]:
        """Return the full decision log of a result in order (undo rows included)."""
        rows = self._q("SELECT * FROM decisions WHERE result_id = ? ORDER BY seq", (result_id,))  # type: ignore[attr-defined]
        return [
            DecisionRecord(
                id=r["id"], seq=r["seq"], result_id=r["result_id"], lesion_id=r["lesion_id"], action=r["action"],
                undoes=r["undoes"], actor=r["actor"], created_at=r["created_at"],
                lesion=json.loads(r["lesion_json"]) if r["lesion_json"] else None,
            )
            for r in rows
        ]

    def lesion_states(self, result_id: int, before_seq: Optional[int] = None) -> tuple[dict[int, str], list[Lesion]]:
        """Return the effective decisions: lesion id → ``accept``/``reject``, and the added lesions.

        ``before_seq`` limits the log to decisions older than that store sequence value (the
        state a sign-off saw), so annotations can leave out an amendment still in progress.
        """
        log = [d for d in self.decisions(result_id) if before_seq is None or d.seq < before_seq]
        undone = {d.undoes for d in log if d.action == "undo"}
        states: dict[int, str] = {}
        added: list[Lesion] = []
        masks = {r["id"]: r["mask"] for r in self._q("SELECT id, mask FROM decisions WHERE result_id = ? AND action = 'add'", (result_id,))}  # type: ignore[attr-defined]
        for d in log:
            if d.id in undone or d.action == "undo":
                continue
            if d.action == "add" and d.lesion:
                shape = tuple(d.lesion["shape"])
                crop = np.unpackbits(np.frombuffer(masks[d.id], np.uint8))[: shape[0] * shape[1]].reshape(shape).astype(bool)
                added.append(Lesion(id=d.lesion_id, x=d.lesion["x"], y=d.lesion["y"], area_px=d.lesion["area_px"],
                                    bbox=tuple(d.lesion["bbox"]), score=1.0, source="clinician", mask=crop))
            else:
                states[d.lesion_id] = d.action
        added = [a for a in added if states.get(a.id) != "reject"]
        return states, added

    def sign_off(self, result_id: int, grade: str, referral: str, actor: str) -> ResultRecord:
        """Sign a review off: store the reviewed result and queue it as new instances in the study.

        The automatic result and anything already delivered stay untouched: every sign-off (an
        amendment included) is a new result with new series and instance UIDs.

        Parameters
        ----------
        result_id
            The automatic result the decisions were recorded on.
        grade, referral
            The clinician's retinopathy grade and referral decision, as the UI words them.
        actor
            The signing clinician's user name.

        Raises
        ------
        StoreError
            If the result does not exist, the photograph was removed by retention (before or during
            the sign-off: nothing is then queued and no file is left), or space is short.
        """
        row = self._auto_result_row(result_id)
        image = self.get_image(row["image_id"])  # type: ignore[attr-defined]
        if image.deleted_at:
            raise StoreError(PHOTO_REMOVED)
        auto = self.load_result(result_id)  # type: ignore[attr-defined]
        states, added = self.lesion_states(result_id)
        final, table = final_lesions(auto, states, added)
        res = auto.result
        res_final = dataclasses.replace(res, lesions=final, display_threshold=0.0, timings_ms={})
        payload = {"kind": "reviewed", "based_on": result_id, "gaze": auto.payload.get("gaze", {}), "grade": grade,
                   "referral": referral, "signed_by": actor, "decisions": table}
        json_bytes, npz_bytes = build_result_files(res_final, [int(l.id) for l in final], payload)
        files.check_space(self.root, len(json_bytes) + len(npz_bytes) + image.width * image.height * 2,  # type: ignore[attr-defined]
                          self.config.data.min_free_mb,  # type: ignore[attr-defined]
                          ("store the signed review", "Sync or export the delivered studies, or free space on the "
                           "device, then sign off again. The review was not stored."))
        with self._writing():  # type: ignore[attr-defined]
            new_id = self._write_review(row, result_id, json_bytes, npz_bytes, res_final, final, grade, referral, actor)
        logger.info("study %d signed off (%d lesions); review queued", row["study_id"], len(final))
        self._changed()  # type: ignore[attr-defined]
        return self.get_result(new_id)  # type: ignore[attr-defined]

    def _write_review(self, row, result_id, json_bytes, npz_bytes, res_final, final, grade, referral, actor) -> int:  # type: ignore[no-untyped-def]
        study = self.get_study(row["study_id"])  # type: ignore[attr-defined]
        folder = f"studies/{study.study_uid}"
        tag = uuid.uuid4().hex[:12]
        json_rel, masks_rel = f"{folder}/result-review-{tag}.json", f"{folder}/result-review-{tag}.npz"
        try:
            json_sha = files.atomic_write(self.path(json_rel), json_bytes)  # type: ignore[attr-defined]
            masks_sha = files.atomic_write(self.path(masks_rel), npz_bytes)  # type: ignore[attr-defined]
            now = utc_now()
            with self._lock, db.transaction(self._conn) as c:  # type: ignore[attr-defined]
                # Re-check inside the write transaction: retention (another thread or process) may
                # have removed the photograph since sign_off() looked. Both sides take BEGIN
                # IMMEDIATE, so either retention sees this review's queued items and keeps the
                # photograph, or this sees it removed and refuses; never a review queued that
                # can no longer be built.
                deleted = c.execute("SELECT deleted_at FROM images WHERE id = ?", (row["image_id"],)).fetchone()
                if deleted is None or deleted[0]:
                    raise StoreError(PHOTO_REMOVED)
                new_id = self._insert_result(c, row["study_id"], row["image_id"], "reviewed", result_id, json_rel,  # type: ignore[attr-defined]
                                             json_sha, masks_rel, masks_sha, res_final, len(final), grade, referral,
                                             actor, now)
                self._enqueue(c, row["study_id"], row["image_id"], new_id, OutboxKind.SEG, study.study_uid, now)  # type: ignore[attr-defined]
                self._enqueue(c, row["study_id"], row["image_id"], new_id, OutboxKind.SR, study.study_uid, now)  # type: ignore[attr-defined]
        except BaseException:
            # Nothing names these files now: remove them at once rather than leave them (on a full
            # disk, too) until some other process opens the store and sweeps.
            self._remove_uncommitted([json_rel, masks_rel])  # type: ignore[attr-defined]
            raise
        return new_id
