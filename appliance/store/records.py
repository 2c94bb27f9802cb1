"""Records the store hands out: plain dataclasses, no database handles inside."""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from appliance.errors import StoreError

#: A patient ID the PACS can take as DICOM's PatientID (LO): 1 to 64 characters, none of them
#: a control character or ``\`` (DICOM's value separator: one ID would arrive as two).
PATIENT_ID_RE = re.compile(r"^[^\\\x00-\x1f\x7f]{1,64}$")
#: What the import page asks for, where a person types the ID: a pseudonymous code (no spaces or
#: ``^``, so no names), within the same 64 characters (a UUID fits).
PSEUDONYM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
EYES = ("L", "R")


def check_study_keys(patient_id: str, eye: str) -> tuple[str, str]:
    """Return the patient ID (stripped) and eye of a new study, or say what is allowed.

    Every way in (``glanceseg study add``, :meth:`Store.add_study`, the import page, which
    also asks for :data:`PSEUDONYM_RE`) checks here, before any work, so an ID the PACS cannot
    take never reaches the store.

    Raises
    ------
    StoreError
        With a sentence fit to show as is.
    """
    patient_id = str(patient_id).strip()
    if not PATIENT_ID_RE.fullmatch(patient_id):
        raise StoreError("The patient ID must be 1 to 64 characters, without a backslash or control characters.")
    if eye not in EYES:
        raise StoreError("Choose the left (L) or right (R) eye.")
    return patient_id, eye


def laterality_mismatch(camera: dict[str, Any], eye: str) -> str:
    """A sentence when the photograph's own laterality contradicts ``eye``, else "".

    A fundus camera records which eye it photographed (DICOM ImageLaterality, from the
    head-rest position); the export then states the eye chosen at import. Why a warning, not a
    refusal: the import's eye is the person's decision, but a contradiction must reach them,
    since a wrong eye is a classic screening error.
    """
    stated = str(camera.get("ImageLaterality") or "").strip().upper()
    if stated not in EYES or stated == eye:
        return ""
    names = {"L": "left", "R": "right"}
    return (f"The photograph's DICOM header says the {names[stated]} eye; it is filed as the {names[eye]} eye: "
            "check the eye.")


def new_uid() -> str:
    """Return a fresh DICOM UID under the UUID-derived root ``2.25`` (PS3.5 B.2): no registered
    organisation root is needed, and two appliances never collide."""
    return f"2.25.{uuid.uuid4().int}"


class OutboxState(str, enum.Enum):
    """Where one outbox item stands."""

    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"


class OutboxKind(str, enum.Enum):
    """What one outbox item carries (each is one DICOM instance)."""

    PHOTO = "photo"
    SEG = "seg"
    SR = "sr"


class Decision(str, enum.Enum):
    """A clinician's action on one lesion."""

    ACCEPT = "accept"
    REJECT = "reject"
    ADD = "add"
    UNDO = "undo"


@dataclass(frozen=True)
class StudyRecord:
    """One study: one photograph of one eye of one patient, with its results.

    ``delivery`` is ``"delivered"`` when every queued instance was confirmed on the server,
    ``"pending"`` otherwise; ``reviewed`` is True once a clinician signed a result off.
    """

    id: int
    seq: int
    study_uid: str
    patient_id: str
    eye: str
    created_at: str
    image_id: int
    auto_result_id: Optional[int]
    latest_result_id: Optional[int]
    reviewed: bool
    delivery: str
    pending_items: int


@dataclass(frozen=True)
class ImageRecord:
    """The stored photograph of a study (a lossless RGB PNG under the data folder)."""

    id: int
    seq: int
    study_id: int
    path: str
    sha256: str
    source_sha256: str
    source_name: str
    width: int
    height: int
    fov_deg: Optional[float]
    camera: dict[str, Any]
    series_uid: str
    sop_uid: str
    created_at: str
    deleted_at: Optional[str]


@dataclass(frozen=True)
class ResultRecord:
    """One stored segmentation result: the automatic one, or a clinician's signed review."""

    id: int
    seq: int
    study_id: int
    image_id: int
    kind: str
    based_on: Optional[int]
    mode: str
    model_name: str
    model_sha256: str
    lesion_count: int
    grade: Optional[str]
    referral: Optional[str]
    signed_by: Optional[str]
    created_at: str
    json_path: str
    masks_path: str


@dataclass(frozen=True)
class DecisionRecord:
    """One row of the append-only decision log of a result (an undo is a row too)."""

    id: int
    seq: int
    result_id: int
    lesion_id: int
    action: str
    undoes: Optional[int]
    actor: str
    created_at: str
    lesion: Optional[dict[str, Any]] = None


@dataclass(frozen=True)
class OutboxItem:
    """One DICOM instance waiting for (or past) delivery."""

    id: int
    seq: int
    idempotency_key: str
    study_id: int
    image_id: int
    result_id: Optional[int]
    kind: str
    study_uid: str
    series_uid: str
    sop_uid: str
    path: Optional[str]
    content_sha256: Optional[str]
    state: str
    attempts: int
    next_attempt_at: float
    last_error: Optional[str]
    created_at: str
    delivered_at: Optional[str]


@dataclass(frozen=True)
class SyncStatus:
    """Outbox counts for the UI, the LEDs and ``glanceseg sync``."""

    pending: int
    sending: int
    delivered: int
    failing: int
    last_error: Optional[str]
    last_delivered_at: Optional[str]
    studies_pending: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
