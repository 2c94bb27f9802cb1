"""The worklist: studies, imports from upload or USB folder, and the photographs themselves."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
from flask import Blueprint, abort, flash, redirect, render_template, request, send_file, url_for

from appliance.store import files
from appliance.store.retention import DERIVED_COPY_FOLDERS
from appliance.ui.app import audit, get_config, get_services, get_studies
from appliance.ui.importing import (ImportRefused, candidate_folders, check_patient, folder_files, import_bytes,
                                    read_limited, resolve_folder)
from appliance.ui.security import roles_required

logger = logging.getLogger(__name__)

bp = Blueprint("worklist", __name__)


#: Studies on one worklist page. Why a page: a busy station stores ~60 studies a day, and each row
#: reads its automatic result (quality badge) from disk; a page of 200 took ~0.5 s and anything
#: older than the 200 newest could not be reached at all. Kept under the result cache's size
#: (``studies._CACHE_MAX``) so paging back and forth reads no file twice.
PAGE_STUDIES = 50


@bp.route("/")
def index() -> Any:
    """The worklist: a page of studies, newest first, optionally one patient's (``?patient=ID``)."""
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        abort(400)
    patient = request.args.get("patient", "").strip() or None
    rows = get_studies().studies(limit=PAGE_STUDIES + 1, offset=(page - 1) * PAGE_STUDIES, patient_id=patient)
    return render_template("worklist.html", studies=rows[:PAGE_STUDIES], more=len(rows) > PAGE_STUDIES, page=page,
                           patient=patient or "", jobs=get_services().analysis.jobs())


@bp.route("/import", methods=["GET", "POST"])
@roles_required("technician", "clinician")
def import_photos() -> Any:
    """Upload photographs from the browser, or import from a USB / import folder."""
    config, services = get_config(), get_services()
    results: list[tuple[str, bool, str]] = []
    status = 200
    if request.method == "POST":
        try:
            patient_id, eye = check_patient(request.form.get("patient_id", ""), request.form.get("eye", ""))
            if request.form.get("source") == "folder":
                folder = resolve_folder(request.form.get("folder", ""), config)
                items = [(p.name, p) for p in folder_files(folder)]
                if not items:
                    raise ImportRefused("No photographs (JPEG, PNG, TIFF, DICOM) in that folder.")
            else:
                items = [(f.filename or "", f) for f in request.files.getlist("files") if f.filename]
                if not items:
                    raise ImportRefused("Choose at least one photograph to upload.")
        except ImportRefused as exc:
            results.append(("", False, str(exc)))
            items = []
            status = 400
        for name, item in items:
            try:
                raw = read_limited(item, config) if isinstance(item, Path) else item.read()
                got = import_bytes(raw, name, patient_id, eye, config, services)
            except ImportRefused as exc:
                results.append((name, False, str(exc)))
                status = 400
                continue
            results.append((name, True, " ".join(filter(None, ("Imported; being analysed.", got.warning)))))
            audit("import", f"job:{got.job_id}", {"patient_eye": eye})
        if status == 200 and results:
            for name, _, msg in results:
                flash(f"{name}: {msg}", "ok")
            return redirect(url_for("worklist.index"))
    return render_template("import.html", folders=candidate_folders(config), results=results), status


RETAINED_AWAY = ("This photograph was removed by the retention policy after the central server confirmed "
                 "its delivery; it is on the PACS.")


def _cached_jpeg(image_id: int, kind: str, max_side: int = 0) -> Path:
    """Return the cached JPEG of a stored photograph (``display`` full size, ``thumb`` small), made once."""
    config, studies = get_config(), get_studies()
    image = studies.image(image_id)
    if image is None:
        abort(404)
    cache = config.data_dir / kind / f"{image.sha256}.jpg"
    if studies.store.get_image(image_id).deleted_at:
        # Retention removed the photograph: its browser copies go with it, never served again.
        for folder in DERIVED_COPY_FOLDERS:
            (config.data_dir / folder / f"{image.sha256}.jpg").unlink(missing_ok=True)
        abort(410, description=RETAINED_AWAY)
    if not cache.exists():
        bgr = cv2.cvtColor(studies.load_rgb(image_id), cv2.COLOR_RGB2BGR)
        if max_side and max(bgr.shape[:2]) > max_side:
            f = max_side / max(bgr.shape[:2])
            bgr = cv2.resize(bgr, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
        # Owner-only (0600 in 0700 folders), as every file of the store: these are the patient's
        # photograph too; with the process umask they were world-readable.
        files.atomic_write(cache, buf.tobytes())
    return cache


def _no_store(resp: Any) -> Any:
    """A patient photograph must not stay in a shared browser's disk cache after logout."""
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.route("/image/<int:image_id>/display.jpg")
def display(image_id: int) -> Any:
    """The photograph as a JPEG the browser can show (TIFF and DICOM are converted once)."""
    return _no_store(send_file(_cached_jpeg(image_id, "display"), mimetype="image/jpeg", max_age=0))


@bp.route("/image/<int:image_id>/thumb.jpg")
def thumb(image_id: int) -> Any:
    """A small JPEG for the worklist."""
    return _no_store(send_file(_cached_jpeg(image_id, "thumbs", 320), mimetype="image/jpeg", max_age=0))
