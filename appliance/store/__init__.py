"""The local store: SQLite (WAL, ``synchronous=FULL``) plus atomically written files.

Public API (``from appliance.store import Store``), one ``Store(config)`` per process, thread-safe::

    store = Store(config)                     # opens/creates config.data_dir, applies migrations

    # studies and the worklist (ordered by the monotonic sequence, never by the wall clock)
    study = store.add_study(photo, patient_id, "L", result, gaze_summary)   # -> StudyRecord
    store.get_study(study_id); store.worklist(limit, offset, unreviewed_only)
    store.get_image(image_id); store.load_image_rgb(image_id)              # verified by sha256
    store.get_result(result_id); store.results_for_study(study_id)
    store.load_result(result_id)              # -> StoredResult(.result, .mask_lesion_ids, .payload, .mask())

    # clinicians' decisions on the automatic result (append-only log; undo is a row too)
    store.decide(result_id, lesion_id, "accept" | "reject", actor)
    store.add_lesion(result_id, x, y, actor, radius_px=6.0, mask=None, bbox=None)
    store.undo(result_id, actor)              # undoes the latest decision not undone yet
    store.decisions(result_id); store.lesion_states(result_id)  # -> ({lesion_id: action}, [added Lesion])

    # sign-off: a NEW reviewed result, queued as new SEG + SR instances in the same study;
    # every amendment is another sign-off; nothing delivered is ever overwritten
    review = store.sign_off(result_id, grade, referral, actor)          # -> ResultRecord

    # outbox (read by appliance.sync; the UI shows sync_status())
    store.sync_status()                       # -> SyncStatus(pending, sending, delivered, failing, ...)
    store.outbox(state=None, study_id=None); store.undelivered(limit=None); store.get_item(item_id)
    store.due_items(...); store.claim(id); store.record_built(...); store.record_failure(...)
    store.record_delivered(id); store.reset_sending()

    store.connection                          # the sqlite3 connection, for areas owning 0002/0003 tables
    store.path(relative)                      # absolute path of a file the store names

Guarantees: files are written (temp, fsync, rename, fsync dir) before the row naming them commits;
a crash leaves either no row or a complete, checksummed file. Space is checked before a study writes
anything (``StoreError`` "Not enough free space ..."). Every row carries ``seq`` from one counter.
Migrations: ``migrations/NNNN_name.sql``, applied in order, each in one transaction
(0001 store/sync, 0002 UI, 0003 annotations, 0004 UI sessions). Retention: :mod:`appliance.store.retention`.
The sync side (DICOM, DICOMweb, scheduler, USB export) is :mod:`appliance.sync`.
"""

from appliance.store.records import (
    Decision,
    DecisionRecord,
    ImageRecord,
    OutboxItem,
    OutboxKind,
    OutboxState,
    ResultRecord,
    StudyRecord,
    SyncStatus,
)
from appliance.store.results import StoredResult
from appliance.store.store import Store

__all__ = [
    "Store",
    "StoredResult",
    "StudyRecord",
    "ImageRecord",
    "ResultRecord",
    "DecisionRecord",
    "OutboxItem",
    "OutboxKind",
    "OutboxState",
    "Decision",
    "SyncStatus",
]
