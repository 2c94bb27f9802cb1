"""DICOM instances built from the store: classes, references, masks, and UIDs stable across retries."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

from appliance.errors import StoreError, SyncError
from appliance.glance.lesions import SegmentationResult
from appliance.store.store import Store
from appliance.sync import export
from appliance.sync.dicomweb import DicomwebClient, is_loopback
from appliance.config import DicomwebConfig
from appliance.sync.instances import materialise
from appliance.sync.usb_export import export_undelivered

from store.helpers import FakePhoto, add_study, make_config, make_study_inputs
from sync.checks import sr_texts


@pytest.fixture
def store(tmp_path):
    with Store(make_config(tmp_path / "data")) as s:
        yield s



def test_instances_decode_and_reference_each_other(store):
    study = add_study(store, 1, "PAT-1", "R")
    built = {}
    for item in store.outbox():
        path, sha = materialise(store, item)
        built[item.kind] = (item, pydicom.dcmread(str(path)))
    photo_item, photo = built["photo"]
    assert photo.SOPClassUID == export.OP_8BIT_SOP_CLASS and photo.Modality == "OP"
    assert photo.ImageLaterality == "R" and photo.PatientID == "PAT-1"
    assert photo.StudyInstanceUID == study.study_uid
    assert np.array_equal(photo.pixel_array, store.load_image_rgb(study.image_id))
    seg_item, seg_ds = built["seg"]
    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    local = store.load_result(study.auto_result_id).mask() > 0
    assert local.any() and np.array_equal(seg.pixel_array.reshape(local.shape) > 0, local)
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == photo.SOPInstanceUID
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    _, sr = built["sr"]
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    texts = sr_texts(sr)
    assert "Automatic result, not reviewed" in texts and any('"lesions"' in t for t in texts)
    count = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeMeaning == "Microaneurysm count"][0]
    assert int(count.MeasuredValueSequence[0].NumericValue) == int(local.any()) * len(store.load_result(study.auto_result_id).mask_lesion_ids)
    evidence = {e.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                for s in sr.CurrentRequestedProcedureEvidenceSequence for e in s.ReferencedSeriesSequence}
    assert {photo.SOPInstanceUID, seg_ds.SOPInstanceUID} <= evidence


def test_empty_mask_still_exports(store):
    photo, result = make_study_inputs(2)
    empty = SegmentationResult(result.width, result.height, "scan", [], 0.5, "litemedsam", "cd" * 32)
    store.add_study(photo, "P", "L", empty)
    seg_item = [i for i in store.outbox() if i.kind == "seg"][0]
    path, _ = materialise(store, seg_item)
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(str(path)))
    assert not seg.pixel_array.any()


def test_retry_sends_the_same_bytes_and_a_corrupt_build_keeps_its_uids(store):
    add_study(store, 3)
    item = [i for i in store.outbox() if i.kind == "seg"][0]
    path, sha = materialise(store, item)
    again, sha2 = materialise(store, store.get_item(item.id))
    assert (again, sha2) == (path, sha)
    path.write_bytes(b"garbage")
    rebuilt, _ = materialise(store, store.get_item(item.id))
    ds = pydicom.dcmread(str(rebuilt))
    assert ds.SOPInstanceUID == item.sop_uid and ds.SeriesInstanceUID == item.series_uid


def test_reviewed_result_is_manual_and_signed(store):
    study = add_study(store, 4)
    review = store.sign_off(study.auto_result_id, "R2", "refer", "Dr Who")
    items = [i for i in store.outbox() if i.result_id == review.id]
    seg = pydicom.dcmread(str(materialise(store, items[0])[0]))
    sr = pydicom.dcmread(str(materialise(store, items[1])[0]))
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
    assert sr.VerificationFlag == "VERIFIED" and sr.CompletionFlag == "COMPLETE"
    assert "R2" in sr_texts(sr) and "refer" in sr_texts(sr)


def test_usb_export_writes_verified_files_and_manifest(store, tmp_path):
    add_study(store, 5)
    add_study(store, 6)
    dest = tmp_path / "usb"
    dest.mkdir()
    report = export_undelivered(store, dest)
    assert report.files == 6 and report.studies == 2
    import hashlib
    import json

    manifest = json.loads((report.folder / "manifest.json").read_text())
    for entry in manifest["files"]:
        raw = (report.folder / entry["file"]).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
        assert pydicom.dcmread(report.folder / entry["file"]).SOPInstanceUID == entry["sop_uid"]
    assert store.sync_status().pending == 6  # an export is not a confirmed delivery


def _flip_one_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def test_usb_export_skips_an_item_it_cannot_build_and_exports_the_rest(store, tmp_path):
    import hashlib
    import json

    studies = [add_study(store, seed) for seed in (50, 51, 52)]
    bad = studies[1]
    _flip_one_byte(store.path(store.get_image(bad.image_id).path))  # one corrupt photograph
    dest = tmp_path / "usb"
    dest.mkdir()
    report = export_undelivered(store, dest)
    assert report.files == 6 and report.studies == 2
    assert {s.study_uid for s in report.skipped} == {bad.study_uid}
    assert sorted(s.kind for s in report.skipped) == ["photo", "seg", "sr"]  # all three need the photograph
    assert all("corrupt" in s.reason for s in report.skipped)
    manifest = json.loads((report.folder / "manifest.json").read_text())
    assert {e["study_uid"] for e in manifest["files"]} == {studies[0].study_uid, studies[2].study_uid}
    for entry in manifest["files"]:
        raw = (report.folder / entry["file"]).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
        assert pydicom.dcmread(report.folder / entry["file"]).SOPInstanceUID == entry["sop_uid"]
    assert {(s["study_uid"], s["kind"]) for s in manifest["skipped"]} == {(bad.study_uid, k) for k in ("photo", "seg", "sr")}
    assert all("corrupt" in s["reason"] for s in manifest["skipped"])
    assert not (report.folder / bad.study_uid).exists()
    assert store.sync_status().pending == 9  # all stay queued


def test_usb_export_of_nothing_buildable_fails_and_says_why(store, tmp_path):
    study = add_study(store, 53)
    _flip_one_byte(store.path(store.get_image(study.image_id).path))
    with pytest.raises(StoreError, match="None of the 3 .*corrupt"):
        export_undelivered(store, tmp_path)
    assert list(tmp_path.iterdir()) == [store.root]


def test_client_transport_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.5") and not is_loopback("pacs.example")
    DicomwebClient(DicomwebConfig(url="http://127.0.0.1:8042/dicom-web"))
    DicomwebClient(DicomwebConfig(url="https://pacs.example/dicom-web", ca="/etc/ssl/certs/ca-certificates.crt"))
    with pytest.raises(SyncError, match="loopback"):
        DicomwebClient(DicomwebConfig(url="http://pacs.example/dicom-web"))
    with pytest.raises(SyncError, match="No DICOMweb server"):
        DicomwebClient(DicomwebConfig(url=""))
    with pytest.raises(SyncError, match="certificate"):
        DicomwebClient(DicomwebConfig(url="https://pacs.example", key="k.pem"))
    with pytest.raises(SyncError, match="not in the URL"):  # it would reach logs and support archives
        DicomwebClient(DicomwebConfig(url="https://sync:s3cret@pacs.example/dicom-web"))
    client = DicomwebClient(DicomwebConfig(url="https://pacs.example/dw/", user="u", password="p", cert="c.pem",
                                           key="k.pem", ca="ca.pem"))
    assert client.base == "https://pacs.example/dw" and client.session.auth == ("u", "p")
    assert client.session.cert == ("c.pem", "k.pem") and client.session.verify == "ca.pem"


def test_cli_export_usb_and_status(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from sync.test_sync_orthanc import GLANCESEG

    with Store(make_config(tmp_path / "data")) as store:
        add_study(store, 9)
    env = {**os.environ, "GLANCESEG_DATA_DIR": str(tmp_path / "data"), "GLANCESEG_DATA_MIN_FREE_MB": "1"}
    env.pop("GLANCESEG_CONFIG", None)
    usb = tmp_path / "usb"
    usb.mkdir()
    repo = Path(__file__).resolve().parents[2]
    run = lambda *a: subprocess.run([sys.executable, "-c", GLANCESEG, *a], capture_output=True, text=True,  # noqa: E731
                                    env=env, cwd=repo, timeout=300)
    out = run("export-usb", str(usb))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["files"] == 3
    status = run("sync", "--status")
    assert status.returncode == 0 and json.loads(status.stdout)["pending"] == 3
    listed = run("study", "list")
    assert listed.returncode == 0 and json.loads(listed.stdout.splitlines()[0])["delivery"] == "pending"
    missing = run("export-usb", str(tmp_path / "not-mounted"))
    assert missing.returncode == 2 and "not a folder" in missing.stderr
    with Store(make_config(tmp_path / "data")) as store:
        second = add_study(store, 10)
        _flip_one_byte(store.path(store.get_image(second.image_id).path))
    partial = run("export-usb", str(usb))
    assert partial.returncode == 1 and "3 item(s) could not be built" in partial.stderr
    assert second.study_uid in partial.stderr and "corrupt" in partial.stderr
    out = json.loads(partial.stdout)
    assert out["files"] == 3 and {s["study_uid"] for s in out["skipped"]} == {second.study_uid}


@pytest.fixture
def station_west_of_utc(monkeypatch):
    """The station's clock set 5 hours west of UTC (a POSIX TZ rule: no tz database needed)."""
    import time

    monkeypatch.setenv("TZ", "GLS+5")
    time.tzset()
    yield "-0500"
    monkeypatch.undo()
    time.tzset()


def _moment(date: str, time_: str, offset: str):
    from datetime import datetime

    return datetime.strptime(date + time_.split(".")[0] + offset, "%Y%m%d%H%M%S%z")


def test_times_are_local_with_their_offset_in_every_instance(store, station_west_of_utc):
    # DA/TM are local time: without the offset a PACS files the study 5 hours (or a day) off.
    from datetime import datetime, timezone

    study = add_study(store, 7)
    built = {i.kind: pydicom.dcmread(str(materialise(store, i)[0])) for i in store.outbox()}
    created = datetime.strptime(study.created_at[:19] + "+0000", "%Y-%m-%dT%H:%M:%S%z")
    for kind, ds in built.items():
        assert ds.TimezoneOffsetFromUTC == station_west_of_utc, kind
        assert _moment(ds.StudyDate, ds.StudyTime, ds.TimezoneOffsetFromUTC) == created, kind
        made = _moment(ds.ContentDate, ds.ContentTime, ds.TimezoneOffsetFromUTC)
        assert abs((made - datetime.now(timezone.utc)).total_seconds()) < 600, kind


def test_photograph_carries_the_mandatory_modules_and_its_lossy_past(store, tmp_path):
    import cv2

    from appliance.imaging.io import load_photograph

    _, result = make_study_inputs(8)
    rgb = np.random.default_rng(8).integers(0, 256, (result.height, result.width, 3), dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 90])
    photo = load_photograph(jpeg.tobytes(), store.config.imaging, name="eye.jpg")
    assert photo.dicom["LossyImageCompression"] == "01"
    photo.dicom["AcquisitionDateTime"] = "20261120094107+0530"  # as read from the camera's EXIF
    store.add_study(photo, "P-8", "L", result)
    ds = pydicom.dcmread(str(materialise(store, store.outbox()[0])[0]))
    assert ds.AcquisitionDateTime == "20261120094107+0530"  # when the eye was photographed
    assert ds.LossyImageCompression == "01" and ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert float(ds.LossyImageCompressionRatio) == pytest.approx(rgb.nbytes / len(jpeg), rel=0.01)
    # Synchronization (M in the OP 8 bit IOD), Type 2 RefractiveStateSequence, 2C PatientOrientation.
    assert ds.SynchronizationFrameOfReferenceUID == "1.2.840.10008.15.1.1"
    assert ds.SynchronizationTrigger == "NO TRIGGER" and ds.AcquisitionTimeSynchronized == "N"
    assert "RefractiveStateSequence" in ds and "PatientOrientation" in ds
    assert ds.SoftwareVersions.startswith("glanceseg ") and ds.SoftwareVersions != "glanceseg 0"
    png = [i for i in store.outbox() if i.kind == "photo"]
    add_study(store, 9)  # a lossless source stays "00"
    lossless = pydicom.dcmread(str(materialise(store, [i for i in store.outbox() if i.kind == "photo"][-1])[0]))
    assert len(png) == 1 and lossless.LossyImageCompression == "00"


def test_an_amended_report_names_the_reports_it_supersedes(store):
    study = add_study(store, 10)
    first = store.sign_off(study.auto_result_id, "R1", "no referral", "Dr Who")
    second = store.sign_off(study.auto_result_id, "R2", "refer", "Dr Who")
    srs = [i for i in store.outbox() if i.kind == "sr"]
    assert [i.result_id for i in srs] == [study.auto_result_id, first.id, second.id]
    latest = pydicom.dcmread(str(materialise(store, srs[-1])[0]))
    named = {r.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
             for s in latest.PredecessorDocumentsSequence for r in s.ReferencedSeriesSequence}
    assert named == {srs[0].sop_uid, srs[1].sop_uid}
    assert "PredecessorDocumentsSequence" not in pydicom.dcmread(str(materialise(store, srs[0])[0]))


def test_instances_pass_dciodvfy(store, dciodvfy):
    # The validator checks every Type 1/2 attribute, condition and value of each instance against
    # the standard's module tables; its warnings (a private coding scheme, no Study ID) are left alone.
    import subprocess

    photo, result = make_study_inputs(11)
    photo.dicom.update({"AcquisitionDateTime": "20261120094107+0530", "LossyImageCompression": "01",
                        "LossyImageCompressionMethod": "ISO_10918_1", "LossyImageCompressionRatio": "9.87",
                        "PixelSpacing": "0.0061\\0.0062"})  # a source DICOM's calibration
    study = store.add_study(photo, "PAT-11", "R", result)
    store.sign_off(study.auto_result_id, "R2", "refer", "Dr Ünïcode Müller")
    for item in store.outbox():
        path, _ = materialise(store, item)
        if item.kind == "photo":  # kept in the export, so the photograph's scale travels with it
            assert [float(v) for v in pydicom.dcmread(str(path)).PixelSpacing] == [0.0061, 0.0062]
        out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (item.kind, errors)


def test_a_build_refused_for_space_says_so_not_new_study(store, monkeypatch):
    from appliance.store import files

    add_study(store, 54)
    monkeypatch.setattr(files, "free_bytes", lambda directory: 0)
    with pytest.raises(StoreError) as refused:
        materialise(store, store.outbox()[0])
    assert "build the DICOM file for delivery" in str(refused.value) and "new study" not in str(refused.value)
