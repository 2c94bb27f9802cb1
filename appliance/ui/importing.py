"""Validating photographs on their way in: names, sizes, types, pseudonymous IDs, folders.

Everything a technician brings in (a browser upload, a USB stick) is untrusted: names never
become paths, sizes are checked before decoding, the content is decoded by the imaging package
(which refuses non-images, truncation and decompression bombs), and folder imports stay inside
the configured import roots.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from appliance.config import Config
from appliance.errors import ApplianceError, StoreError
from appliance.imaging.io import is_dicom
from appliance.store.records import PSEUDONYM_RE, check_study_keys, laterality_mismatch

logger = logging.getLogger(__name__)

EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dcm", ""}


class ImportRefused(ValueError):
    """A file or form value was refused; the message is shown to the technician as is."""


@dataclass
class Imported:
    """One photograph accepted and queued for analysis (stored as a study when analysed)."""

    job_id: int
    name: str
    #: A sentence for the technician to check (the same file stored before for another patient).
    warning: str = ""


def check_name(name: str) -> str:
    """Return ``name`` when it is a plain file name, else raise :class:`ImportRefused`."""
    if not name or len(name) > 200 or any(c in name for c in "/\\\x00") or ".." in name or name.startswith("."):
        raise ImportRefused(f"The file name \u201c{name[:80]}\u201d is not allowed: it must be a plain file name, "
                            "without folders or \u201c..\u201d.")
    if Path(name).suffix.lower() not in EXTENSIONS:
        raise ImportRefused(f"\u201c{name}\u201d is not a photograph. Accepted: JPEG, PNG, TIFF or DICOM.")
    return name


def check_patient(patient_id: str, eye: str) -> tuple[str, str]:
    """Validate a pseudonymous patient ID and the eye (:func:`appliance.store.records.check_study_keys`)."""
    if not PSEUDONYM_RE.fullmatch(patient_id.strip()):
        raise ImportRefused("The patient ID must be a pseudonymous code of 1 to 64 letters, digits, dots, dashes "
                            "or underscores (no names).")
    try:
        return check_study_keys(patient_id, eye)
    except StoreError as exc:
        raise ImportRefused(str(exc)) from exc


def import_bytes(raw: bytes, name: str, patient_id: str, eye: str, config: Config, services: Any) -> Imported:
    """Validate one photograph and queue it for analysis (then storage) in the background.

    Raises
    ------
    ImportRefused
        With a sentence for the technician (bad name, too large, not an image, ...).
    """
    check_name(name)
    limit = int(config.data.max_upload_mb) * 2 ** 20
    if len(raw) > limit:
        raise ImportRefused(f"\u201c{name}\u201d is too large ({len(raw) / 2 ** 20:.1f} MB). "
                            f"The limit is {config.data.max_upload_mb} MB.")
    if not raw:
        raise ImportRefused(f"\u201c{name}\u201d is empty.")
    try:
        photo = services.load_photograph(raw, config.imaging, name=name)
    except ApplianceError as exc:
        raise ImportRefused(f"This file cannot be used: {exc}") from exc
    # The same file again for the same eye is a double submit, never a new examination: a second
    # study would go to the PACS too. For another patient or eye it may be a mix-up, or a file
    # shared on purpose (a teaching set, the demo's samples): imported, with a word to check.
    earlier = services.store.study_of_source(photo.sha256)
    warning = ""
    if earlier is not None:
        where = (f"patient {earlier.patient_id}, {'left' if earlier.eye == 'L' else 'right'} eye, "
                 f"{earlier.created_at[:16].replace('T', ' ')} UTC")
        if (earlier.patient_id, earlier.eye) == (patient_id, eye):
            raise ImportRefused(f"\u201c{name}\u201d was already imported: {where}.")
        warning = f"The same file was imported before for {where}: check the patient ID."
    warning = " ".join(filter(None, (warning, laterality_mismatch(photo.dicom, eye))))
    if any(j.photo.sha256 == photo.sha256 and (j.patient_id, j.eye) == (patient_id, eye) and j.state != "failed"
           for j in services.analysis.jobs()):
        raise ImportRefused(f"\u201c{name}\u201d is already being analysed.")
    job = services.analysis.submit(photo, patient_id, eye, name, raw=raw)
    logger.info("photograph accepted (%dx%d), analysis job %d", photo.width, photo.height, job.id)
    return Imported(job.id, name, warning)


def import_roots(config: Config) -> list[Path]:
    """The folders a technician may import from, resolved."""
    return [Path(p).resolve() for p in config.ui.import_roots.split(":") if p.strip()]


def resolve_folder(folder: str, config: Config) -> Path:
    """Return ``folder`` resolved, when it lies inside an import root; else raise ImportRefused."""
    if not folder or "\x00" in folder:
        raise ImportRefused("Choose a folder to import from.")
    target = Path(os.path.realpath(folder))
    for root in import_roots(config):
        if target == root or root in target.parents:
            if not target.is_dir():
                raise ImportRefused("That folder does not exist (is the USB stick plugged in?).")
            return target
    raise ImportRefused("Photographs can only be imported from a USB stick or the import folders "
                        f"({config.ui.import_roots}).")


def folder_files(folder: Path, max_files: int = 200) -> list[Path]:
    """Photographs directly in ``folder`` (no links, no hidden files, no recursion).

    A file without an extension is one when it is a DICOM file: fundus cameras name their
    exports ``IM000001`` and the like, which an extension-only filter passed over silently.
    """
    out = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            continue
        suffix = Path(entry.name).suffix.lower()
        extensionless_dicom = suffix == "" and entry.name.upper() != "DICOMDIR" and _is_dicom_file(entry.path)
        if suffix in EXTENSIONS - {""} or extensionless_dicom:
            out.append(Path(entry.path))
        if len(out) >= max_files:
            break
    return out


def _is_dicom_file(path: str) -> bool:
    """Whether the file at ``path`` starts as a DICOM file does (unreadable: no)."""
    try:
        with open(path, "rb") as f:
            return is_dicom(f.read(256))
    except OSError:
        return False


def candidate_folders(config: Config, limit: int = 30) -> list[Path]:
    """Folders offered for import: each root and its direct subfolders (mounted sticks)."""
    out: list[Path] = []
    for root in import_roots(config):
        if root.is_dir():
            out.append(root)
            try:
                out.extend(sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")))
            except OSError:
                continue
    return out[:limit]


def read_limited(path: Path, config: Config) -> Optional[bytes]:
    """Read a file if it is within the size limit, else raise ImportRefused.

    A file that cannot be read (the stick pulled out, a bad sector) is refused by name: the
    OSError stopped the whole import with a server error, the files after it untried.
    """
    try:
        size = path.stat().st_size
        if size > int(config.data.max_upload_mb) * 2 ** 20:
            raise ImportRefused(f"\u201c{path.name}\u201d is too large ({size / 2 ** 20:.1f} MB). "
                                f"The limit is {config.data.max_upload_mb} MB.")
        return path.read_bytes()
    except OSError as exc:
        raise ImportRefused(f"\u201c{path.name}\u201d cannot be read ({exc.strerror or exc}): "
                            "is the USB stick still plugged in?") from exc
