"""The UI's view of the local store: worklist rows, lesions with decisions, sign-off.

A thin adapter over :class:`appliance.store.Store`'s public API (the store owns every table
and file; nothing here writes SQL). It shapes store records into what the templates show and
maps the UI's words onto the store's calls:

* one store study is one photograph of one eye, so a worklist row holds one photograph;
* ``decision`` of a lesion is ``accepted`` / ``rejected`` / ``added`` (from
  ``Store.lesion_states`` of the automatic result) or None;
* the status of a row is ``new`` (no decision yet), ``read`` (decisions recorded),
  ``pending_sync`` (signed off, instances waiting) or ``synced`` (signed off, all delivered).

Stored results are immutable, so their lesions are cached per result id.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional

from appliance.errors import StoreError
from appliance.glance.lesions import Lesion, SegmentationResult

logger = logging.getLogger(__name__)

STATUSES = ("new", "read", "pending_sync", "synced")
DECISION_WORDS = {"accept": "accepted", "reject": "rejected"}
#: The measures of :func:`appliance.imaging.quality.check_quality`, as the badge names them.
QUALITY_FAULTS = {
    "focus": "out of focus",
    "median_luma": "too dark",
    "dark_fraction": "partly too dark",
    "saturated_fraction": "overexposed",
    "circle_coverage": "field of view cut off",
    "image_fraction": "field of view too small",
    "fov_edge": "scale unknown: no edge of the field of view",
    "resolution": "resolution too low",
}
_CACHE_MAX = 64


@dataclass
class ImageRow:
    """The photograph of a study, as the pages show it."""

    id: int
    study_id: int
    result_id: int
    name: str
    sha256: str
    width: int
    height: int
    gradable: bool
    #: What made it ungradable, as short English phrases (message ids the pages translate).
    faults: list[str] = field(default_factory=list)


@dataclass
class StudyRow:
    """A worklist row: one study (one photograph of one eye)."""

    id: int
    patient_id: str
    eye: str
    status: str
    created_at: str
    result_id: int
    images: list[ImageRow] = field(default_factory=list)


def lesion_dict(lesion: Lesion, decision: Optional[str]) -> dict[str, Any]:
    """A lesion as the pages use it: the ``lesions.json`` fields plus the decision."""
    out = lesion.to_json()
    out["decision"] = decision
    return out


class StoreStudies:
    """Studies, lesions, decisions and sign-off over one :class:`appliance.store.Store`.

    Parameters
    ----------
    store
        The process's store (thread-safe).
    """

    #: automatic results by store, then result id (a store's results never change)
    _results: "weakref.WeakKeyDictionary[Any, dict[int, SegmentationResult]]" = weakref.WeakKeyDictionary()
    _results_lock = threading.Lock()

    def __init__(self, store: Any) -> None:
        self.store = store

    # -- results -------------------------------------------------------------------------------
    def auto_result(self, result_id: int) -> SegmentationResult:
        """Return the automatic result (cached: stored results never change)."""
        with self._results_lock:
            cache = self._results.setdefault(self.store, {})
            cached = cache.get(result_id)
        if cached is None:
            cached = self.store.load_result(result_id).result
            with self._results_lock:
                if len(cache) >= _CACHE_MAX:
                    cache.clear()
                cache[result_id] = cached
        return cached

    # -- worklist ------------------------------------------------------------------------------
    def _row(self, rec: Any) -> StudyRow:
        image = self.store.get_image(rec.image_id)
        result = self.auto_result(rec.auto_result_id)
        if rec.reviewed:
            status = "pending_sync" if rec.delivery == "pending" else "synced"
        else:
            status = "read" if self.store.decisions(rec.auto_result_id) else "new"
        img = ImageRow(image.id, rec.id, rec.auto_result_id, image.source_name or f"image {image.id}",
                       image.sha256, image.width, image.height, bool(result.gradable),
                       [QUALITY_FAULTS.get(k, k) for k in result.quality_reasons])
        return StudyRow(rec.id, rec.patient_id, rec.eye, status, rec.created_at, rec.auto_result_id, [img])

    def studies(self, limit: int = 200, offset: int = 0, patient_id: Optional[str] = None) -> list[StudyRow]:
        """Return a page of the worklist, newest first (one patient's studies with ``patient_id``)."""
        return [self._row(r) for r in self.store.worklist(limit=limit, offset=offset, patient_id=patient_id)]

    def study(self, study_id: int) -> Optional[StudyRow]:
        """Return one study, or None."""
        try:
            return self._row(self.store.get_study(study_id))
        except StoreError:
            return None

    def image(self, image_id: int) -> Optional[ImageRow]:
        """Return one photograph, or None."""
        try:
            study_id = self.store.get_image(image_id).study_id
        except StoreError:
            return None
        study = self.study(study_id)
        return study.images[0] if study else None

    def load_rgb(self, image_id: int) -> Any:
        """The stored photograph, H×W×3 uint8 RGB (checksum verified by the store)."""
        return self.store.load_image_rgb(image_id)

    # -- lesions and decisions -------------------------------------------------------------------
    def lesion_ids(self, result_id: int) -> set[int]:
        """Ids of the automatic result's lesions (all scores)."""
        return {int(l.id) for l in self.auto_result(result_id).lesions}

    def lesions(self, image_id: int) -> list[dict[str, Any]]:
        """Every lesion of the automatic result plus the added ones, each with its decision."""
        image = self.image(image_id)
        if image is None:
            return []
        states, added = self.store.lesion_states(image.result_id)
        out = [lesion_dict(l, DECISION_WORDS.get(states.get(int(l.id), ""))) for l in self.auto_result(image.result_id).lesions]
        out += [lesion_dict(l, "added") for l in added]
        return out

    def decide(self, result_id: int, lesion_id: int, action: str, user: str) -> None:
        """Record ``accept`` or ``reject`` (a rejected added lesion is withdrawn)."""
        self.store.decide(result_id, lesion_id, action, user)

    def undo(self, result_id: int, user: str) -> Optional[int]:
        """Undo the latest decision; return the lesion id it concerned, or None."""
        record = self.store.undo(result_id, user)
        return None if record is None else int(record.lesion_id)

    def add(self, result_id: int, lesion: Lesion, user: str) -> dict[str, Any]:
        """Record a lesion the clinician added (its mask when it has one, else a disc)."""
        record = self.store.add_lesion(result_id, lesion.x, lesion.y, user, radius_px=6.0,
                                       mask=lesion.mask, bbox=lesion.bbox if lesion.mask is not None else None)
        _, added = self.store.lesion_states(result_id)
        stored = next(a for a in added if a.id == record.lesion_id)
        out = lesion_dict(stored, "added")
        out["source"] = lesion.source if lesion.mask is not None else "clinician"
        return out

    # -- sign-off --------------------------------------------------------------------------------
    def sign_off(self, study_id: int, user: str, grade: str, referral: str) -> int:
        """Sign the study's review off (queues the reviewed result); return the new result id."""
        study = self.study(study_id)
        if study is None:
            raise StoreError(f"There is no study {study_id}.")
        return int(self.store.sign_off(study.result_id, grade, referral, user).id)

    def last_signoff(self, study_id: int) -> Optional[dict[str, Any]]:
        """The latest sign-off: ``grade`` and ``referral`` as worded at sign-off, who, when.

        ``id`` is the signed result's; ``changed`` is True when decisions were made after it,
        which the pages must not show under its signature (they await a new sign-off).
        """
        results = self.store.results_for_study(study_id)
        reviewed = [r for r in results if r.kind == "reviewed"]
        if not reviewed:
            return None
        r = reviewed[-1]
        changed = any(d.seq > r.seq for res in results if res.kind == "auto" for d in self.store.decisions(res.id))
        return {"id": r.id, "grade": r.grade, "referral": r.referral, "signed_by": r.signed_by,
                "signed_at": r.created_at, "changed": changed}
