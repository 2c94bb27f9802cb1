"""Export of undelivered studies to a removable drive, for stations that never see a network.

The export writes every undelivered instance as a DICOM Part-10 file under
``DEST/glanceseg-export-<first seq>-<last seq>/<StudyInstanceUID>/<kind>-<SOPInstanceUID>.dcm`` plus
``manifest.json`` (one entry per file: study, series and instance UIDs, kind, sha256, size, outbox
sequence). Each file is written atomically and read back to check its sha256 before the manifest,
written last, names it. The items stay queued: a file on a USB stick is not a confirmed delivery;
when the clinic imports it, the next network sync finds the instances there and marks them
delivered without sending them again (same UIDs).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import StoreError
from appliance.store import files
from appliance.store.store import Store
from appliance.sync.instances import materialise

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportReport:
    """Where the export went and how much it holds."""

    folder: Path
    files: int
    studies: int
    bytes: int


def export_undelivered(store: Store, dest: Path) -> ExportReport:
    """Export every undelivered outbox item under ``dest``.

    Raises
    ------
    StoreError
        If ``dest`` is not a writable folder, space on it is short, or a file does not verify.
    """
    dest = Path(dest)
    if not dest.is_dir():
        raise StoreError(f"The export destination {dest} is not a folder (is the USB drive mounted?).")
    items = [i for i in store.outbox() if i.state != "delivered"]
    if not items:
        raise StoreError("There is nothing undelivered to export.")
    built = [(item, *materialise(store, item)) for item in items]
    total = sum(path.stat().st_size for _item, path, _sha in built)
    files.check_space(dest, total + (1 << 20), 0)
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
                "note": "DICOM Part-10 files; import them into the PACS (e.g. STOW-RS or the PACS's importer)."}
    files.atomic_write(folder / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8"))
    studies = len({e["study_uid"] for e in entries})
    logger.info("exported %d undelivered instance(s) of %d stud(ies)", len(entries), studies)
    return ExportReport(folder, len(entries), studies, total)
