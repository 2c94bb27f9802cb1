"""``glanceseg segment``: the output contract of DESIGN.md, in scan and gaze mode, with the real model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.cli import main
from appliance.gaze.base import GazeSample
from appliance.gaze.csv_replay import write_gaze_csv

DEMO = Path(__file__).resolve().parents[2] / "appliance" / "demo" / "IDRiD_03.jpg"
MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def crop(tmp_path_factory) -> Path:
    """A 640x640 crop of a real photograph (IDRiD_03, which holds many MAs), as PNG."""
    image = cv2.imread(str(DEMO))
    path = tmp_path_factory.mktemp("img") / "crop.png"
    cv2.imwrite(str(path), image[1000:1640, 1250:1890])
    return path


def _check_contract(out: Path, mode: str, width: int, height: int) -> dict:
    doc = json.loads((out / "lesions.json").read_text())
    assert set(doc) >= {"image", "width", "height", "mode", "model", "lesions", "timings_ms"}
    assert (doc["width"], doc["height"], doc["mode"]) == (width, height, mode)
    assert set(doc["model"]) == {"name", "sha256"}
    ids = [l["id"] for l in doc["lesions"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    for l in doc["lesions"]:
        assert set(l) == {"id", "x", "y", "area_px", "bbox", "score", "source"}
        assert 0.0 <= l["score"] <= 1.0 and l["source"] in ("model", "saliency")
        x0, y0, x1, y1 = l["bbox"]
        assert x0 <= l["x"] <= x1 and y0 <= l["y"] <= y1
    mask = cv2.imread(str(out / "mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (height, width) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    overlay = cv2.imread(str(out / "overlay.png"))
    assert overlay.shape == (height, width, 3)
    score = cv2.imread(str(out / "score.png"), cv2.IMREAD_UNCHANGED)
    assert score.dtype == np.uint16
    return doc


def test_segment_scan_mode_with_the_model(crop: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "out"
    assert main(["segment", str(crop), "--out", str(out)]) == 0
    doc = _check_contract(out, "scan", 640, 640)
    assert doc["model"]["name"] == "litemedsam"
    assert doc["model"]["sha256"] == hashlib.sha256((MODELS / "manifest.json").read_bytes()).hexdigest()
    assert len(doc["lesions"]) >= 5
    threshold = doc["display_threshold"]
    shown = [l for l in doc["lesions"] if l["score"] >= threshold]
    # This crop of IDRiD_03 shows model-outlined lesions (14 today); a result that showed none
    # would make every check below vacuous.
    assert any(l["source"] == "model" for l in shown), shown
    # mask.png holds exactly the shown lesions; low-score candidates stay in the list only.
    mask = cv2.imread(str(out / "mask.png"), cv2.IMREAD_UNCHANGED) > 0
    assert mask.any()
    boxes = np.zeros_like(mask)
    for l in shown:
        x0, y0, x1, y1 = l["bbox"]
        assert mask[y0:y1, x0:x1].any()
        boxes[y0:y1, x0:x1] = True
    assert not (mask & ~boxes).any()  # no pixel of a lesion below the threshold


def test_segment_gaze_mode_processes_only_glanced_ground(crop: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    gaze = tmp_path / "gaze.csv"
    t0 = 1_000_000_000
    # Half a second on one spot of the upper-left quarter, then track loss.
    samples = [GazeSample(t0 + i * 5_000_000, 150.0 + (i % 3), 160.0, True, 60.0) for i in range(100)]
    samples.append(GazeSample(t0 + 101 * 5_000_000, float("nan"), float("nan"), True, 60.0))
    write_gaze_csv(gaze, samples)
    out = tmp_path / "out"
    assert main(["segment", str(crop), "--gaze", str(gaze), "--no-model", "--out", str(out)]) == 0
    doc = _check_contract(out, "gaze", 640, 640)
    assert doc["gaze_samples"]["fixations"] == 1 and doc["gaze_samples"]["no_gaze"] == 1
    assert doc["lesions"]  # the glanced ground holds candidates: none would pass every check below
    for l in doc["lesions"]:  # one 1-degree-sigma fixation covers ~2 degrees around the spot
        assert abs(l["x"] - 150) < 4 * 60 and abs(l["y"] - 160) < 4 * 60
    scan = tmp_path / "scan"
    assert main(["segment", str(crop), "--no-model", "--out", str(scan)]) == 0
    assert len(json.loads((scan / "lesions.json").read_text())["lesions"]) > len(doc["lesions"])


@pytest.mark.parametrize("payload, message", [(b"", "empty"), (b"not an image at all", "not an image")])
def test_segment_refuses_bad_input_with_a_clear_error(tmp_path: Path, capsys, payload: bytes, message: str) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(payload)
    assert main(["segment", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "lesions.json").exists()


def test_segment_reports_the_scale_and_why_a_crop_inside_the_aperture_is_ungradable(
        crop: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    guessed = tmp_path / "guessed"
    assert main(["segment", str(crop), "--no-model", "--out", str(guessed)]) == 0
    doc = json.loads((guessed / "lesions.json").read_text())
    # No aperture edge in a 640 px crop: the circle circumscribing it stands in, 45° across it.
    assert doc["um_per_px"] == pytest.approx(45 * 290 / (640 * 2 ** 0.5), rel=1e-3)
    assert doc["gradable"] is False and set(doc["quality_reasons"]) == {"fov_edge"}
    assert "um_per_px" in capsys.readouterr().out  # the console says what to set

    monkeypatch.setenv("GLANCESEG_IMAGING_UM_PER_PX", "3.9")  # IDRiD's pixel at the default 45°
    known = tmp_path / "known"
    assert main(["segment", str(crop), "--no-model", "--out", str(known)]) == 0
    doc = json.loads((known / "lesions.json").read_text())
    assert doc["um_per_px"] == 3.9
    assert doc["gradable"] is True and doc["quality_reasons"] == {}

    monkeypatch.setenv("GLANCESEG_IMAGING_UM_PER_PX", "-1")
    assert main(["segment", str(crop), "--no-model", "--out", str(tmp_path / "bad")]) != 0
    assert "um_per_px" in capsys.readouterr().err


def test_segment_says_why_a_gaze_recording_gave_nothing(crop: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    # The tracker was never worn: no fixation, no lesion, and the counts say so instead of silence.
    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    gaze = tmp_path / "gaze.csv"
    write_gaze_csv(gaze, [GazeSample(i * 5_000_000, 150.0, 160.0, False, 60.0) for i in range(200)])
    out = tmp_path / "out"
    assert main(["segment", str(crop), "--gaze", str(gaze), "--no-model", "--out", str(out)]) == 0
    doc = json.loads((out / "lesions.json").read_text())
    assert doc["lesions"] == [] and doc["gaze_samples"]["not_worn"] == 200
    assert doc["gaze_samples"]["fixations"] == 0
    assert "No fixation in the gaze recording (not worn 200)" in capsys.readouterr().out


def test_segment_refuses_an_out_that_is_a_file_before_segmenting(tmp_path: Path, monkeypatch, capsys) -> None:
    """An --out naming a file is one clear error (exit 2) given at once, not a traceback after the work."""
    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    target = tmp_path / "results"
    target.write_text("not a folder")

    def no_segmentation(*args, **kwargs):
        raise AssertionError("segmented although --out cannot be written")

    monkeypatch.setattr("appliance.glance.scan.segment_photograph", no_segmentation)
    assert main(["segment", str(DEMO), "--out", str(target)]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert target.read_text() == "not a folder"
    assert main(["segment", str(DEMO), "--out", str(target / "sub")]) == 2
    # A photograph refused leaves no (empty) output folder behind.
    (tmp_path / "bad.jpg").write_text("not a photograph")
    assert main(["segment", str(tmp_path / "bad.jpg"), "--out", str(tmp_path / "new" / "out")]) == 2
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "ninety"])
def test_segment_refuses_a_px_per_deg_that_gives_no_scale(value: str, tmp_path: Path, capsys) -> None:
    """--px-per-deg 0 (or negative, nan, inf) dropped every sample as unscaled and still exited 0."""
    with pytest.raises(SystemExit) as exc:
        main(["segment", str(DEMO), "--gaze", str(tmp_path / "g.csv"), f"--px-per-deg={value}",
              "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "px per degree" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _ophthalmic_dicom(rgb: np.ndarray, path: Path, **attrs) -> Path:
    """``rgb`` as a fundus camera exports it: Ophthalmic Photography 8 Bit, with ``attrs``."""
    from dicom_files import ophthalmic_dicom

    path.write_bytes(ophthalmic_dicom(rgb, **attrs))
    return path


def test_segment_takes_an_ophthalmic_dicoms_scale_from_its_pixel_spacing(
        crop: Path, tmp_path: Path, monkeypatch) -> None:
    # A fundus camera states the size of a pixel on the retina (PixelSpacing, mm): a crop inside
    # the aperture was flagged "scale unknown" all the same, and the FOV guess sized its MAs.
    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    rgb = cv2.imread(str(crop))[:, :, ::-1]
    dicom = _ophthalmic_dicom(rgb, tmp_path / "crop.dcm", PixelSpacing=[0.0042, 0.0042], HorizontalFieldOfView=50)
    out = tmp_path / "out"
    assert main(["segment", str(dicom), "--no-model", "--out", str(out)]) == 0
    doc = json.loads((out / "lesions.json").read_text())
    assert doc["um_per_px"] == pytest.approx(4.2)
    assert doc["gradable"] is True and doc["quality_reasons"] == {}


@pytest.mark.parametrize("angle", [2.0, 400.0])
def test_segment_uses_the_configured_field_angle_when_the_dicoms_is_implausible(
        angle: float, tmp_path: Path, monkeypatch, caplog) -> None:
    # A DICOM's implausible HorizontalFieldOfView stopped the run with "Check [imaging] fov_deg",
    # which was right; the configured angle stands in, with a warning naming the file's value.
    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    image = cv2.imread(str(DEMO))
    small = cv2.resize(image, (image.shape[1] // 4, image.shape[0] // 4), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    jpeg_doc, dicom_doc = tmp_path / "jpeg", tmp_path / "dicom"
    cv2.imwrite(str(tmp_path / "small.png"), small[:, :, ::-1])
    assert main(["segment", str(tmp_path / "small.png"), "--no-model", "--out", str(jpeg_doc)]) == 0
    dicom = _ophthalmic_dicom(small, tmp_path / "small.dcm", HorizontalFieldOfView=angle)
    assert main(["segment", str(dicom), "--no-model", "--out", str(dicom_doc)]) == 0
    assert "field angle" in caplog.text and "is implausible" in caplog.text
    expected = json.loads((jpeg_doc / "lesions.json").read_text())["um_per_px"]
    assert json.loads((dicom_doc / "lesions.json").read_text())["um_per_px"] == pytest.approx(expected)
