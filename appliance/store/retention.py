"""Retention: a photograph leaves the device only after the server confirmed it, plus a grace period.

A study's photograph is removed when every outbox item of the study is delivered (confirmed by
reading back) and the latest confirmation is older than ``[data] retention_days``. The row is marked
first and the file removed second, so a crash between the two leaves an orphaned file that the next
run removes, never a row pointing at a missing photograph. Result files (JSON and masks) stay: they
are small and feed the clinicians' annotations. A clock set back in time only delays removal; a
clock set forward can bring it closer, but never before the delivery was confirmed.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Optional

from appliance.store import db, files
from appliance.store.results import utc_now

if TYPE_CHECKING:
    from appliance.store.store import Store

logger = logging.getLogger(__name__)


def expired_images(store: Store, now_unix: Optional[float] = None) -> list[int]:
    """Return ids of photographs whose retention period after confirmed delivery has passed."""
    now = time.time() if now_unix is None else now_unix
    horizon = now - float(store.config.data.retention_days) * 86400.0
    rows = store._q(
        "SELECT i.id FROM images i WHERE i.deleted_at IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.study_id = i.study_id AND o.state != 'delivered')"
        " AND EXISTS (SELECT 1 FROM outbox o WHERE o.image_id = i.id AND o.kind = 'photo' AND o.state = 'delivered')"
        " AND (SELECT MAX(delivered_unix) FROM outbox o WHERE o.study_id = i.study_id) <= ?",
        (horizon,),
    )
    return [int(r["id"]) for r in rows]


#: Folders of the data folder where the UI keeps JPEG copies of stored photographs, named by
#: the stored PNG's sha256: they go with the photograph.
DERIVED_COPY_FOLDERS = ("display", "thumbs")


def _save_annotation_tiles(store: Store) -> None:
    """Turn the signed decisions into annotations (tile PNGs) before a photograph goes.

    The tiles are cut from the photograph only when the examples are built; without this the
    decisions on every study that expired before the next ``annotations export`` lost their
    training examples (exported as ``skipped_no_tile``). A failure here is logged and does not
    stop the removal: a full disk must not wait for a corrupt result file.
    """
    from appliance.errors import StoreError
    from appliance.store import annotations

    try:
        annotations.refresh(store)
    except (StoreError, OSError) as exc:
        logger.warning("annotations could not be saved before retention: %s", exc)


#: The ``store_counter`` row holding the highest ``images.deleted_seq`` whose files are gone.
FILES_CURSOR = "retention_files"


def _remove_files_of_removed(store: Store) -> None:
    """Remove the files of photographs marked removed since the last pass that finished this.

    Why a cursor: every photograph ever removed was looked up on disk (itself and its two JPEG
    copies) at every sync pass, once a minute: 45,000 look-ups after a year. The cursor moves
    only after the files are gone, so those of a pass interrupted between marking and removing
    are removed by the next one.
    """
    found = store._q("SELECT value FROM store_counter WHERE name = ?", (FILES_CURSOR,))
    cursor = int(found[0][0]) if found else 0
    rows = store._q("SELECT path, sha256, deleted_seq FROM images WHERE deleted_seq > ? ORDER BY deleted_seq",
                    (cursor,))
    for row in rows:
        copies = [store.root / folder / f"{row['sha256']}.jpg" for folder in DERIVED_COPY_FOLDERS]
        for path in [store.path(row["path"]), *copies]:
            if path.exists():
                files.remove_durable(path)
    if rows:
        with store._lock, db.transaction(store._conn) as c:
            c.execute("INSERT INTO store_counter (name, value) VALUES (?, ?)"
                      " ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                      (FILES_CURSOR, int(rows[-1]["deleted_seq"])))


def purge_expired(store: Store, now_unix: Optional[float] = None) -> int:
    """Remove expired photographs (see the module docstring); return how many were removed."""
    removed = 0
    expired = expired_images(store, now_unix)
    if expired:
        _save_annotation_tiles(store)
    for image_id in expired:
        with store._lock, db.transaction(store._conn) as c:
            # Re-check inside the transaction: a sign-off may have queued new items meanwhile.
            still = c.execute(
                "SELECT 1 FROM images i WHERE i.id = ? AND i.deleted_at IS NULL AND NOT EXISTS"
                " (SELECT 1 FROM outbox o WHERE o.study_id = i.study_id AND o.state != 'delivered')",
                (image_id,),
            ).fetchone()
            if not still:
                continue
            c.execute("UPDATE images SET deleted_at = ?, deleted_seq = ? WHERE id = ?",
                      (utc_now(), db.next_seq(c), image_id))
        removed += 1
    _remove_files_of_removed(store)
    # A built DICOM copy of the photograph left by an interrupted pass must not outlive it either.
    store.sweep_built_files()
    if removed:
        logger.info("retention removed %d delivered photograph(s)", removed)
    return removed
