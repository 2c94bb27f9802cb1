"""Export of undelivered studies to a removable drive, for stations that never see a network.

The export writes every undelivered instance as a DICOM Part-10 file under
``DEST/glanceseg-export-<first seq>-<last seq>/<StudyInstanceUID>/<kind>-<SOPInstanceUID>.dcm`` plus
``manifest.json`` (one entry per file: study, series and instance UIDs, kind, sha256, size, outbox
sequence). Each file is written atomically and read back to check its sha256 before the manifest,
written last, names it. The items stay queued: a file on a USB stick is not a confirmed delivery;
when the clinic imports it, the next network sync finds the instances there and marks them
delivered without sending them again (same UIDs).

An item that cannot be built (a photograph file that fails its checksum, a missing result) is
skipped, not fatal: the export is the only route off the device for such a station, so one bad
file must not strand every other patient's data. The manifest (``skipped``) and the report name
each skipped item and why, and ``glanceseg export-usb`` then exits non-zero.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import StoreError
from appliance.store import files
from appliance.store.records import OutboxItem
from appliance.store.store import Store
from appliance.sync.instances import materialise

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedItem:
    """An undelivered item the export left out because it could not be built, and why."""

    outbox_seq: int
    kind: str
    study_uid: str
    sop_uid: str
    reason: str


@dataclass(frozen=True)
class ExportReport:
    """Where the export went, how much it holds, and what it had to leave out."""

    folder: Path
    files: int
    studies: int
    bytes: int
    skipped: tuple[SkippedItem, ...] = ()


def _build_each(store: Store, items: list[OutboxItem]) -> tuple[list[tuple[OutboxItem, Path, str]], list[SkippedItem]]:
    """Build every item on its own, so that one that fails does not stop the others."""
    built: list[tuple[OutboxItem, Path, str]] = []
    skipped: list[SkippedItem] = []
    for item in items:
        try:
            path, sha = materialise(store, item)
        except Exception as exc:  # noqa: BLE001 - any one item's failure is reported, the rest exported
            reason = str(exc) or type(exc).__name__
            logger.warning("USB export: outbox item %d (%s) skipped: %s", item.seq, item.kind, reason)
            skipped.append(SkippedItem(item.seq, item.kind, item.study_uid, item.sop_uid, reason))
        else:
            built.append((item, path, sha))
    return built, skipped


def export_undelivered(store: Store, dest: Path) -> ExportReport:
    """Export every undelivered outbox item that can be built under ``dest``.

    Items that cannot be built are left out and listed in :attr:`ExportReport.skipped` and in the
    manifest; they stay queued like the rest.

    Raises
    ------
    StoreError
        If ``dest`` is not a writable folder, space on it is short, a file does not verify, or no
        undelivered item at all can be built.
    """
    dest = Path(dest)
    if not dest.is_dir():
        raise StoreError(f"The export destination {dest} is not a folder (is the USB drive mounted?).")
    items = store.undelivered()
    if not items:
        raise StoreError("There is nothing undelivered to export.")
    built, skipped = _build_each(store, items)
    if not built:
        raise StoreError(f"None of the {len(items)} undelivered item(s) could be built, so nothing was exported; "
                         f"the first reason: {skipped[0].reason}")
    total = sum(path.stat().st_size for _item, path, _sha in built)
    files.check_space(dest, total + (1 << 20), 0,
                      (f"export to {dest}", "Use a larger drive or free space on it. Nothing was exported."))
    folder = dest / f"glanceseg-export-{items[0].seq}-{items[-1].seq}"
    entries = []
    for item, path, sha in built:
        rel = f"{item.study_uid}/{item.kind}-{item.sop_uid}.dcm"
        written = files.atomic_write(folder / rel, path.read_bytes())
        if written != sha or files.sha256_file(folder / rel) != sha:
            raise StoreError(f"The exported file {rel} does not verify; the drive may be failing.")
        entries.append({"file": rel, "kind": item.kind, "study_uid": item.study_uid, "series_uid": item.series_uid,
                        "sop_uid": item.sop_uid, "sha256": sha, "bytes": path.stat().st_size, "outbox_seq": item.seq})
    manifest = {"format": "glanceseg-usb-export/1", "files": entries,
                "skipped": [dataclasses.asdict(s) for s in skipped],
                "note": "DICOM Part-10 files; import them into the PACS (e.g. STOW-RS or the PACS's importer)."
                        + (" Items listed under skipped could not be built and are not here; they stay queued"
                           " on the device." if skipped else "")}
    files.atomic_write(folder / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8"))
    studies = len({e["study_uid"] for e in entries})
    logger.info("exported %d undelivered instance(s) of %d stud(ies)", len(entries), studies)
    if skipped:
        logger.warning("USB export left out %d item(s) that could not be built", len(skipped))
    return ExportReport(folder, len(entries), studies, total, tuple(skipped))
