"""Times as the people at the station read them: the station's local time, with its zone.

The store keeps UTC ISO 8601 (``2026-11-27T22:05:31.123456Z``), which is right for records and
ordering but wrong on a screen or a printed report: a clinician reading "22:05 UTC" in Berlin or
Nairobi has to do arithmetic to know when a study was signed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Optional

logger = logging.getLogger(__name__)

#: How a time is shown: date, minutes, zone abbreviation (CET, EAT, UTC).
DISPLAY_FORMAT = "%Y-%m-%d %H:%M %Z"


def local_time(value: Optional[str], fmt: str = DISPLAY_FORMAT) -> str:
    """Return a stored UTC ISO 8601 time as the station's local time with its zone.

    Parameters
    ----------
    value
        UTC ISO 8601 as the store writes it (a trailing ``Z`` or an offset); a time without an
        offset is read as UTC.
    fmt
        ``strftime`` format of the answer.

    Returns
    -------
    str
        The local time (``2026-11-27 23:05 CET``); ``""`` for None or empty; the value itself
        when it is not a time (shown as stored rather than hidden).
    """
    if not value:
        return ""
    text = str(value).strip()
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        logger.debug("not an ISO time: %r", text)
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone().strftime(fmt)
