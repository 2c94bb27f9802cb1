"""The outbox: what the sync engine reads and the state changes it records.

States: ``pending`` → ``sending`` (claimed, ``attempts`` counted before the upload starts) →
``delivered`` (only after the server confirmed it holds the instance) or back to ``pending``
with ``last_error`` and a backoff ``next_attempt_at``. ``next_attempt_at`` is wall-clock seconds
and only advisory: a timer further ahead than the longest backoff (the clock was wrong when it was
set) counts as due, so a clock that jumped never parks an item for days.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

from appliance.store import db
from appliance.store.records import OutboxItem, OutboxState, SyncStatus
from appliance.store.results import utc_now

logger = logging.getLogger(__name__)


#: The states before delivery, written as a list the ``outbox_state`` index serves (``state !=
#: 'delivered'`` reads every delivered item too).
_UNDELIVERED = "('pending', 'sending')"


def _item(r: Any) -> OutboxItem:
    return OutboxItem(
        id=r["id"], seq=r["seq"], idempotency_key=r["idempotency_key"], study_id=r["study_id"],
        image_id=r["image_id"], result_id=r["result_id"], kind=r["kind"], study_uid=r["study_uid"],
        series_uid=r["series_uid"], sop_uid=r["sop_uid"], path=r["path"], content_sha256=r["content_sha256"],
        state=r["state"], attempts=r["attempts"], next_attempt_at=r["next_attempt_at"], last_error=r["last_error"],
        created_at=r["created_at"], delivered_at=r["delivered_at"],
    )


class OutboxMixin:
    """Outbox queries and transitions; mixed into :class:`appliance.store.store.Store`."""

    def outbox(self, state: Optional[str] = None, study_id: Optional[int] = None) -> list[OutboxItem]:
        """Return outbox items in sequence order, optionally filtered by state and study."""
        sql, args = "SELECT * FROM outbox WHERE 1=1", []
        if state is not None:
            sql += " AND state = ?"
            args.append(OutboxState(state).value)
        if study_id is not None:
            sql += " AND study_id = ?"
            args.append(study_id)
        return [_item(r) for r in self._q(sql + " ORDER BY seq", args)]  # type: ignore[attr-defined]

    def undelivered(self, limit: Optional[int] = None) -> list[OutboxItem]:
        """Return the items not yet delivered (pending or sending) in sequence order, at most ``limit``.

        Why not ``outbox()`` and a filter: after a year the outbox holds ~75,000 delivered items,
        and the Sync page and the USB export read every one of them to show the few waiting.
        """
        sql = f"SELECT * FROM outbox WHERE state IN {_UNDELIVERED} ORDER BY seq"
        rows = self._q(sql + " LIMIT ?", (limit,)) if limit is not None else self._q(sql)  # type: ignore[attr-defined]
        return [_item(r) for r in rows]

    def get_item(self, item_id: int) -> OutboxItem:
        """Return one outbox item."""
        return _item(self._q("SELECT * FROM outbox WHERE id = ?", (item_id,))[0])  # type: ignore[attr-defined]

    def due_items(self, now_unix: Optional[float] = None, ignore_backoff: bool = False,
                  max_backoff_s: float = 3600.0) -> list[OutboxItem]:
        """Return pending items whose backoff has expired (all pending ones with ``ignore_backoff``)."""
        now = time.time() if now_unix is None else now_unix
        items = self.outbox(OutboxState.PENDING.value)
        if ignore_backoff:
            return items
        return [i for i in items if i.next_attempt_at <= now or i.next_attempt_at - now > max_backoff_s]

    def reset_sending(self) -> int:
        """Return items a crashed pass left ``sending`` to ``pending``; call holding the sync lock."""
        with self._lock, db.transaction(self._conn) as c:  # type: ignore[attr-defined]
            n = c.execute("UPDATE outbox SET state = 'pending' WHERE state = 'sending'").rowcount
        if n:
            logger.warning("%d outbox item(s) were left mid-upload by an interrupted pass; retrying them", n)
        return n

    def claim(self, item_id: int) -> bool:
        """Move a pending item to ``sending`` and count the attempt; False if it was not pending."""
        with self._lock, db.transaction(self._conn) as c:  # type: ignore[attr-defined]
            n = c.execute(
                "UPDATE outbox SET state = 'sending', attempts = attempts + 1 WHERE id = ? AND state = 'pending'",
                (item_id,),
            ).rowcount
        return n == 1

    def record_built(self, item_id: int, path: str, content_sha256: str) -> None:
        """Record the built DICOM file of an item (its bytes are then fixed for every retry)."""
        with self._lock, db.transaction(self._conn) as c:  # type: ignore[attr-defined]
            c.execute("UPDATE outbox SET path = ?, content_sha256 = ? WHERE id = ?", (path, content_sha256, item_id))

    def record_failure(self, item_id: int, error: str, next_attempt_unix: float) -> None:
        """Return an item to ``pending`` with its error and the time of its next attempt."""
        with self._lock, db.transaction(self._conn) as c:  # type: ignore[attr-defined]
            c.execute(
                "UPDATE outbox SET state = 'pending', last_error = ?, next_attempt_at = ? WHERE id = ? AND state != 'delivered'",
                (error[:2000], float(next_attempt_unix), item_id),
            )

    def record_delivered(self, item_id: int) -> None:
        """Mark an item delivered (call only after the server confirmed it holds the instance)."""
        with self._lock, db.transaction(self._conn) as c:  # type: ignore[attr-defined]
            c.execute(
                "UPDATE outbox SET state = 'delivered', last_error = NULL, delivered_at = ?, delivered_unix = ?,"
                " delivered_seq = ? WHERE id = ?",
                (utc_now(), time.time(), db.next_seq(c), item_id),
            )

    def sync_status(self) -> SyncStatus:
        """Return outbox counts: pending, sending, delivered, failing (pending with an error)."""
        # Delivered items are only counted, from the index alone: reading each row for its error
        # took ~0.1 s after a year, and the LEDs and the Sync page ask after every change.
        rows = self._q("SELECT state, COUNT(*) AS n, SUM(last_error IS NOT NULL) AS e FROM outbox"  # type: ignore[attr-defined]
                       f" WHERE state IN {_UNDELIVERED} GROUP BY state")
        counts = {r["state"]: (int(r["n"]), int(r["e"] or 0)) for r in rows}
        counts["delivered"] = (int(self._q(  # type: ignore[attr-defined]
            "SELECT COUNT(*) FROM outbox WHERE state = 'delivered'")[0][0]), 0)
        # Per state, newest first along ``outbox_state``: one query over both states walked the
        # whole outbox by seq (75,000 items after a year) whenever no waiting item had an error.
        last_err = self._q(  # type: ignore[attr-defined]
            "SELECT last_error FROM (SELECT * FROM (SELECT seq, last_error FROM outbox WHERE state = 'pending'"
            " AND last_error IS NOT NULL ORDER BY seq DESC LIMIT 1) UNION ALL SELECT * FROM (SELECT seq, last_error"
            " FROM outbox WHERE state = 'sending' AND last_error IS NOT NULL ORDER BY seq DESC LIMIT 1))"
            " ORDER BY seq DESC LIMIT 1")
        last_ok = self._q("SELECT delivered_at FROM outbox WHERE state = 'delivered' ORDER BY delivered_seq DESC LIMIT 1")  # type: ignore[attr-defined]
        studies = self._q(f"SELECT COUNT(DISTINCT study_id) FROM outbox WHERE state IN {_UNDELIVERED}")[0][0]  # type: ignore[attr-defined]
        return SyncStatus(
            pending=counts.get("pending", (0, 0))[0], sending=counts.get("sending", (0, 0))[0],
            delivered=counts.get("delivered", (0, 0))[0], failing=counts.get("pending", (0, 0))[1],
            last_error=last_err[0][0] if last_err else None,
            last_delivered_at=last_ok[0][0] if last_ok else None, studies_pending=int(studies),
        )
