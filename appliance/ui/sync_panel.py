"""What the Sync page says: the store's outbox counts and the scheduler's errors, in plain words.

Maps ``appliance.store`` / ``appliance.sync`` objects onto the small dict the page shows, so
the page never shows a raw exception text to a technician without an explanation first.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from appliance.ui.timefmt import local_time

logger = logging.getLogger(__name__)

#: (substring of a technical error, the sentence a technician reads). First match wins.
PLAIN_ERRORS = [
    (("[dicomweb] url",),
     "The appliance is set to the wrong address for the clinic server. Ask the administrator to check the DICOMweb URL."),
    (("connection refused", "unreachable", "name or service not known", "timed out", "timeout", "no route"),
     "The clinic server cannot be reached. Results stay safe on this appliance and are sent when it is back."),
    (("401", "403", "unauthorized", "forbidden", "credential", "password"),
     "The clinic server refused the appliance's credentials. Ask the administrator to check the sync user and password."),
    (("certificate", "ssl", "tls"),
     "The clinic server's certificate is not trusted. Ask the administrator to check the CA bundle."),
    (("500", "502", "503", "504", "server error"),
     "The clinic server reported an internal problem. The appliance will try again automatically."),
    (("disk", "space", "no space"),
     "This appliance is running out of disk space. Results already stored are safe; deliver them before adding studies."),
]


def plain_error(message: str) -> str:
    """Return a sentence a technician can act on, followed by the technical text."""
    low = message.lower()
    for keys, sentence in PLAIN_ERRORS:
        if any(k in low for k in keys):
            return f"{sentence} (Details: {message[:160]})"
    return f"Sending failed; the appliance will try again automatically. (Details: {message[:160]})"


def store_sync_status(store: Any, scheduler: Optional[Any] = None,
                      problem: Optional[str] = None) -> Callable[[], dict[str, Any]]:
    """Return ``() -> dict`` over ``Store.sync_status()`` for ``Services.sync_status``;
    ``problem`` is why there is no scheduler (a setting that turned sync off), shown first."""

    def status() -> dict[str, Any]:
        s = store.sync_status()
        errors = [plain_error(s.last_error)] if s.last_error else []
        if problem:
            errors.insert(0, plain_error(problem))
        # Offline, the scheduler tries no item, so the outbox holds no error (or an old one):
        # without its probe's answer the page showed studies piling up and nothing about why,
        # even right after "Sync now".
        indicator = scheduler.indicator() if scheduler is not None else None
        if indicator is not None and indicator.reachable is False and indicator.last_error:
            errors.insert(0, plain_error(indicator.last_error))
        return {"available": scheduler is not None, "pending": s.pending + s.sending,
                "studies_pending": s.studies_pending, "delivered": s.delivered,
                "last_success": s.last_delivered_at, "errors": errors}

    return status


#: What each kind of queued item carries, in the technician's words.
KIND_WORDS = {"photo": "photograph", "seg": "lesion masks (DICOM SEG)", "sr": "review report (DICOM SR)"}


def queued_items(store: Any, limit: int = 100) -> list[dict[str, Any]]:
    """The undelivered outbox items, oldest first, as the Sync page lists them.

    Why: the page showed only a count and the newest error; a technician could not tell which
    patients' results were still on the appliance, nor which item kept failing and why.

    Returns
    -------
    list of dict
        ``patient_id``, ``eye``, ``what`` (the kind in words), ``queued`` (local time),
        ``state`` (``"waiting"``, ``"being sent"`` or ``"failed"``), ``attempts`` and ``error``
        (plain words first, the technical text after, or None).
    """
    studies: dict[int, Any] = {}
    out = []
    for item in store.undelivered(limit):
        if item.study_id not in studies:
            studies[item.study_id] = store.get_study(item.study_id)
        study = studies[item.study_id]
        state = "being sent" if item.state == "sending" else ("failed" if item.last_error else "waiting")
        out.append({"seq": item.seq, "patient_id": study.patient_id, "eye": study.eye,
                    "what": KIND_WORDS.get(item.kind, item.kind), "queued": local_time(item.created_at),
                    "state": state, "attempts": item.attempts,
                    "error": plain_error(item.last_error) if item.last_error else None})
    return out


def scheduler_sync_now(scheduler: Any) -> Callable[[], str]:
    """Return ``() -> str`` that triggers a pass of the sync scheduler ("Sync now")."""

    def now() -> str:
        scheduler.trigger()
        return "Sync started. This page shows the result when it is done."

    return now
