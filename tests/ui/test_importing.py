"""Importing from a USB stick as a fundus camera fills it: DICOM files without an extension, and
a damaged file among good ones."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.ui.importing import ImportRefused, folder_files, read_limited

from .helpers import login


def _camera_dicom(rgb: np.ndarray, **attrs) -> bytes:
    """An Ophthalmic Photography 8 Bit file as a fundus camera writes it, with ``attrs``."""
    from dicom_files import ophthalmic_dicom

    return ophthalmic_dicom(rgb, **attrs)


def _stick(root: Path, fundus_png: Path) -> Path:
    """A camera's export folder: one photograph as IM000001 (no extension), its DICOMDIR, a
    README, a good PNG and a PNG the copy cut short inside its header."""
    stick = root / "stick"
    stick.mkdir()
    rgb = cv2.imread(str(fundus_png))[:, :, ::-1]
    (stick / "IM000001").write_bytes(_camera_dicom(np.ascontiguousarray(rgb[::-1])))
    (stick / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (stick / "README").write_text("Exported by the fundus camera.\n")
    (stick / "good.png").write_bytes(fundus_png.read_bytes())
    (stick / "cut.png").write_bytes(fundus_png.read_bytes()[:20])
    return stick


def test_folder_files_include_a_cameras_extensionless_dicom_files(tmp_path: Path, fundus_png: Path) -> None:
    # Only names with an extension were listed: a camera's IM000001 was passed over in silence.
    stick = _stick(tmp_path, fundus_png)
    assert [p.name for p in folder_files(stick)] == ["IM000001", "cut.png", "good.png"]


def test_folder_import_takes_the_good_files_and_names_the_damaged_one(app, services, ui_config, fundus_png):
    # A PNG cut inside its header raised OSError out of the decoder: the import failed with a
    # server error, the technician saw no word on which files went in.
    client = app.test_client()
    _, token = login(client)
    stick = _stick(Path(ui_config.ui.import_roots), fundus_png)
    resp = client.post("/import", data={"csrf_token": token, "patient_id": "P-3", "eye": "R", "source": "folder",
                                        "folder": str(stick)})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert "cut.png" in page and "truncated or corrupt" in page
    assert page.count("Imported; being analysed.") == 2
    assert services.analysis.wait_idle(300)
    studies = services.store.worklist()
    assert len(studies) == 2 and {s.patient_id for s in studies} == {"P-3"}


def test_a_file_gone_from_the_stick_is_refused_by_name(ui_config, tmp_path: Path) -> None:
    # Listed, then the stick was pulled: the OSError stopped the whole import with a server error.
    with pytest.raises(ImportRefused, match="“IM000002” cannot be read .*USB stick still plugged in"):
        read_limited(tmp_path / "IM000002", ui_config)


def test_an_eye_the_cameras_dicom_contradicts_is_imported_with_a_warning(app, services, fundus_png):
    # The camera records which eye it photographed; filed as the other eye, the study went to
    # the PACS as that eye without a word.
    client = app.test_client()
    _, token = login(client)
    raw = _camera_dicom(cv2.imread(str(fundus_png))[:, :, ::-1], ImageLaterality="R")
    for eye, warned in (("L", True), ("R", False)):
        resp = client.post("/import", data={"csrf_token": token, "patient_id": f"P-{eye}", "eye": eye, "source": "upload",
                                            "files": (io.BytesIO(raw), "IM000001")},
                           content_type="multipart/form-data", follow_redirects=True)
        page = resp.get_data(as_text=True)
        assert resp.status_code == 200 and "Imported; being analysed." in page
        assert ("header says the right eye; it is filed as the left eye" in page) is warned
    assert services.analysis.wait_idle(300)
