"""Turning outbox items into DICOM files, once.

An item's DICOM file is built the first time it is needed (an upload or a USB export), written
atomically to ``outbox/<SOPInstanceUID>.dcm`` and its sha256 recorded in the outbox row. Every
later attempt sends those same bytes: the UIDs were fixed when the item was queued, and the content
is fixed when it is built, so a retry is the same instance byte for byte. A file whose checksum no
longer matches is rebuilt (same UIDs) and logged, never sent as is.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import ComprehensiveSRStorage

from appliance.errors import StoreError, SyncError
from appliance.store import files
from appliance.store.records import OutboxItem
from appliance.store.store import Store
from appliance.sync import export

logger = logging.getLogger(__name__)


def _photo_dataset(store: Store, item: OutboxItem) -> Dataset:
    study = store.get_study(item.study_id)
    image = store.get_image(item.image_id)
    return export.build_photo(store.load_image_rgb(item.image_id), study, image)


def _sibling(store: Store, item: OutboxItem, kind: str) -> OutboxItem:
    for other in store.outbox(study_id=item.study_id):
        if other.result_id == item.result_id and other.kind == kind:
            return other
    raise StoreError(f"Outbox item {item.id} has no {kind} sibling.")


def build_dataset(store: Store, item: OutboxItem) -> Dataset:
    """Build the DICOM dataset of one outbox item from the store's verified files.

    Raises
    ------
    StoreError
        If a source file is missing or corrupt.
    SyncError
        If the instance cannot be built.
    """
    photo = _photo_dataset(store, item)
    if item.kind == "photo":
        return photo
    stored = store.load_result(item.result_id)  # type: ignore[arg-type]
    reviewed = stored.payload.get("kind") == "reviewed"
    if item.kind == "seg":
        return export.build_seg(photo, stored, item, reviewed)
    seg_item = _sibling(store, item, "seg")
    seg = export.build_seg(photo, stored, seg_item, reviewed)
    record = store.get_result(item.result_id)  # type: ignore[arg-type]
    doc = json.loads(store.path(record.json_path).read_bytes())
    # The study's earlier reports, which this one supersedes (its Predecessor Documents): their
    # UIDs were fixed when they were queued, so a rebuilt report names the same ones.
    previous = [_reference(other, ComprehensiveSRStorage) for other in store.outbox(study_id=item.study_id)
                if other.kind == "sr" and other.seq < item.seq]
    return export.build_sr(photo, seg, stored, item, doc, previous)


def _reference(other: OutboxItem, sop_class: str) -> Dataset:
    """The UIDs of a queued instance, as highdicom takes a referenced document."""
    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = other.study_uid, other.series_uid, other.sop_uid
    ds.SOPClassUID = sop_class
    return ds


def materialise(store: Store, item: OutboxItem) -> tuple[Path, str]:
    """Return the DICOM file and sha256 of an item, building and recording it the first time."""
    if item.path and item.content_sha256:
        path = store.path(item.path)
        try:
            if files.sha256_file(path) == item.content_sha256:
                return path, item.content_sha256
            logger.warning("outbox item %d: built file corrupt; rebuilding it with the same UIDs", item.id)
        except FileNotFoundError:
            logger.warning("outbox item %d: built file missing; rebuilding it with the same UIDs", item.id)
    ds = build_dataset(store, item)
    if ds.SOPInstanceUID != item.sop_uid or ds.StudyInstanceUID != item.study_uid:
        raise SyncError(f"Outbox item {item.id} built with UIDs that differ from the queued ones.")
    data = export.to_bytes(ds)
    rel = f"outbox/{item.sop_uid}.dcm"
    files.check_space(store.root, len(data), 0,
                      ("build the DICOM file for delivery", "Free space on the device; the item stays queued and "
                       "is tried again."))
    sha = files.atomic_write(store.path(rel), data)
    store.record_built(item.id, rel, sha)
    return store.path(rel), sha
