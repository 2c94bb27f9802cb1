"""DICOM instances of a study: the photograph, the lesion Segmentation and the result report.

Why these SOP classes
---------------------
Photograph: **Ophthalmic Photography 8 Bit Image** (1.2.840.10008.5.1.4.1.1.77.1.5.1), not
Secondary Capture. It is what a fundus camera itself writes, so a PACS or ophthalmic viewer files
it with the clinic's other fundus photographs: it carries the eye (Image Laterality), the anatomy
(retina), the acquisition device type (fundus camera) and the field-of-view angle, which a Secondary
Capture cannot express in standard attributes. The pixels are the decoded photograph, lossless, RGB,
8 bit, uncompressed (Explicit VR Little Endian: every DICOMweb server accepts it without
transcoding, so the bytes read back are the bytes sent).

Lesion masks: a binary **DICOM Segmentation** built by highdicom, referencing the photograph
(same study, Frame of Reference-free 2-D image, one segment "Microaneurysm" in a private coding
scheme because SNOMED CT has no stable microaneurysm morphology code at hand; the segment's
algorithm is the model name and manifest sha256, or MANUAL for a clinician's review).

Result: a **Comprehensive SR** (highdicom), not an encapsulated JSON/FHIR document. An SR stays
inside the DICOM study the PACS already manages (one transport, one query model, one retention
policy), references the photograph and the Segmentation by UID as evidence, and is readable in any
DICOM viewer; DICOM has no encapsulated-JSON SOP class, and FHIR would need a second server. The
content tree holds the MA count, a per-lesion table (id, centre, area, score, decision), the model
name and sha256, the gaze summary, the grade, referral and signing clinician, and the full result
JSON as one TEXT item so software can read it losslessly.
"""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian

from appliance.errors import SyncError
from appliance.store.records import OutboxItem
from appliance.store.results import StoredResult
from appliance.sync.software_updates import running_software_version

logger = logging.getLogger(__name__)

OP_8BIT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
MANUFACTURER = "GlanceSeg"
MODEL_NAME = "GlanceSeg appliance"
SCHEME = "99GLANCESEG"  # private coding scheme (PS3.16 8.2: designators starting with 99)
MA_CODE = Code("MA", SCHEME, "Microaneurysm")
REPORT_TITLE = Code("REPORT", SCHEME, "Microaneurysm segmentation report")
SERIES_NUMBERS = {"photo": 1, "seg": 2, "sr": 3}


def _dt(iso: str) -> datetime:
    """The store's UTC ISO time as an aware local datetime (DICOM DA/TM are local time)."""
    return datetime.strptime(iso[:19] + "+0000", "%Y-%m-%dT%H:%M:%S%z").astimezone()


def _tz_now() -> str:
    """The station's UTC offset now (``+HHMM``): highdicom stamps SEG and SR in local time."""
    return datetime.now().astimezone().strftime("%z")


def _code_item(code: Code) -> Dataset:
    ds = Dataset()
    ds.CodeValue, ds.CodingSchemeDesignator, ds.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return ds


def build_photo(rgb: np.ndarray, study: Any, image: Any) -> Dataset:
    """Build the Ophthalmic Photography 8 Bit instance of a stored photograph.

    Parameters
    ----------
    rgb
        H×W×3 uint8 RGB pixels (the store's verified copy).
    study, image
        ``StudyRecord`` and ``ImageRecord``: UIDs, patient, eye, times, field of view.
    """
    when = _dt(image.created_at)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = OP_8BIT_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = image.sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = OP_8BIT_SOP_CLASS, image.sop_uid
    ds.SpecificCharacterSet = "ISO_IR 192"
    # Patient / General Study
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "", study.patient_id, "", ""
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate, ds.StudyTime = _dt(study.created_at).strftime("%Y%m%d"), _dt(study.created_at).strftime("%H%M%S")
    ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "", ""
    ds.StudyDescription = "Diabetic retinopathy screening"
    # General / Ophthalmic Photography Series
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "OP", image.series_uid, SERIES_NUMBERS["photo"]
    ds.SeriesDescription = "Fundus photograph"
    # General Equipment
    ds.Manufacturer, ds.ManufacturerModelName = image.camera.get("Manufacturer", ""), image.camera.get("ManufacturerModelName", "")
    ds.SoftwareVersions = f"glanceseg {running_software_version()}"
    # General Image / Ophthalmic Photography Image / Multi-frame
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ContentDate, ds.ContentTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    # When the eye was photographed: the camera's record (DICOM, or EXIF DateTimeOriginal) where
    # the file had one; else the moment it reached the appliance.
    ds.AcquisitionDateTime = image.camera.get("AcquisitionDateTime") or when.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation, ds.LossyImageCompression = "NO", "00"
    ds.NumberOfFrames = 1
    ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.FrameTime = 0
    # Image Pixel
    h, w = rgb.shape[:2]
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    # Acquisition Context, Ocular Region Imaged, OP Acquisition and Photographic Parameters
    ds.AcquisitionContextSequence = DicomSequence([])
    ds.ImageLaterality = study.eye
    ds.AnatomicRegionSequence = DicomSequence([_code_item(codes.SCT.Retina)])
    ds.PatientEyeMovementCommanded, ds.EmmetropicMagnification, ds.IntraOcularPressure, ds.PupilDilated = "", None, None, ""
    ds.HorizontalFieldOfView = float(image.fov_deg) if image.fov_deg else None
    if image.camera.get("PixelSpacing"):
        # The camera's own calibration (mm on the retina), kept when the photograph came as an
        # ophthalmic DICOM: the only scale of one cropped inside the aperture.
        ds.PixelSpacing = str(image.camera["PixelSpacing"]).split("\\")
    ds.AcquisitionDeviceTypeCodeSequence = DicomSequence([_code_item(codes.SCT.FundusCamera)])
    for keyword in ("IlluminationTypeCodeSequence", "LightPathFilterTypeStackCodeSequence",
                    "ImagePathFilterTypeStackCodeSequence", "LensesCodeSequence"):
        setattr(ds, keyword, DicomSequence([]))
    ds.DetectorType = ""
    ds.RefractiveStateSequence = DicomSequence([])  # Type 2 (C.8.17.4)
    ds.PatientOrientation = ""  # General Image, Type 2C: no Image Orientation (Patient) here
    # Synchronization (mandatory in the OP IODs): the station's clock, synchronised to nothing.
    ds.SynchronizationFrameOfReferenceUID = "1.2.840.10008.15.1.1"  # Universal Coordinated Time
    ds.SynchronizationTrigger, ds.AcquisitionTimeSynchronized = "NO TRIGGER", "N"
    # DA and TM are local time; the offset says which (SOP Common), so a PACS files the study
    # on the day and hour it happened wherever the station's clock is set.
    ds.TimezoneOffsetFromUTC = when.strftime("%z")
    # A photograph that came as JPEG stays lossy in any copy (C.7.6.1.1.5): say so, and how.
    if image.camera.get("LossyImageCompression") == "01":
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = image.camera.get("LossyImageCompressionMethod", "ISO_10918_1")
        ds.LossyImageCompressionRatio = image.camera.get("LossyImageCompressionRatio", "")
    return ds


def build_seg(photo: Dataset, stored: StoredResult, item: OutboxItem, reviewed: bool) -> Dataset:
    """Build the binary Segmentation of a result's mask, referencing the photograph."""
    import highdicom as hd

    res = stored.result
    algorithm = None
    if reviewed:
        algorithm_type = hd.seg.SegmentAlgorithmTypeValues.MANUAL
    else:
        algorithm_type = hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algorithm = hd.AlgorithmIdentificationSequence(
            name=res.model_name or "glanceseg", family=codes.DCM.ArtificialIntelligence,
            version=(res.model_sha256 or "unknown")[:64],
        )
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Microaneurysm",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=MA_CODE, algorithm_type=algorithm_type, algorithm_identification=algorithm,
    )
    mask = stored.mask() > 0
    # The OP IOD is a multi-frame IOD, so highdicom looks for the shared functional groups of an
    # enhanced image, which an OP image has not (it has no frame of reference or pixel spacing). It
    # is given a view of the same instance with one empty Pixel Measures item: the reference is by
    # SOP Instance UID and nothing spatial is claimed.
    source = Dataset()
    source.update(photo)
    source.file_meta = photo.file_meta
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([Dataset()])
    source.SharedFunctionalGroupsSequence = DicomSequence([shared])
    try:
        seg = hd.seg.Segmentation(
            source_images=[source], pixel_array=mask[None], segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description], series_instance_uid=item.series_uid,
            series_number=SERIES_NUMBERS["seg"], sop_instance_uid=item.sop_uid, instance_number=1,
            manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME,
            software_versions=f"glanceseg {running_software_version()}", device_serial_number="0",
            omit_empty_frames=False, content_label="REVIEWED" if reviewed else "AUTOMATIC",
            content_description="Clinician-reviewed microaneurysms" if reviewed else "Automatic microaneurysm candidates",
            series_description="MA segmentation (reviewed)" if reviewed else "MA segmentation (automatic)",
        )
    except (ValueError, TypeError) as exc:
        raise SyncError(f"The Segmentation could not be built: {exc}.") from exc
    # Drop the empty Pixel Measures item copied from the view (conditional on a frame of reference).
    for group in seg.get("SharedFunctionalGroupsSequence", []):
        measures = group.get("PixelMeasuresSequence")
        if measures is not None and all("PixelSpacing" not in m for m in measures):
            del group.PixelMeasuresSequence
    seg.PatientOrientation = ""  # General Image 2C: no Image Orientation (Patient) without a frame of reference
    seg.TimezoneOffsetFromUTC = _tz_now()
    return seg


def _num(name: Code, value: float, unit: Code) -> Any:
    import highdicom as hd

    return hd.sr.NumContentItem(name=name, value=value, unit=unit, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _text(name: str, value: str) -> Any:
    import highdicom as hd

    return hd.sr.TextContentItem(name=Code(name.upper().replace(" ", "_")[:16], SCHEME, name), value=value,
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def build_sr(photo: Dataset, seg: Dataset, stored: StoredResult, item: OutboxItem, result_json: dict[str, Any],
             previous: Any = None) -> Dataset:
    """Build the Comprehensive SR of a result (see the module docstring for its content)."""
    import highdicom as hd

    rel = hd.sr.RelationshipTypeValues.CONTAINS
    res, payload = stored.result, stored.payload
    reviewed = payload.get("kind") == "reviewed"
    lesions_unit, px_unit, one = Code("{lesions}", "UCUM", "lesions"), Code("{pixels}", "UCUM", "pixels"), Code("1", "UCUM", "no units")
    items: list[Any] = [
        _text("Result status", "Reviewed and signed off by a clinician" if reviewed else "Automatic result, not reviewed"),
        _num(Code("MA_COUNT", SCHEME, "Microaneurysm count"), len(stored.mask_lesion_ids), lesions_unit),
        _text("Model name", res.model_name or ""),
        _text("Model sha256", res.model_sha256 or ""),
        _text("Gaze summary", json.dumps(payload.get("gaze", {}), sort_keys=True)),
        hd.sr.ImageContentItem(name=Code("SRC_IMAGE", SCHEME, "Source photograph"),
                               referenced_sop_class_uid=photo.SOPClassUID,
                               referenced_sop_instance_uid=photo.SOPInstanceUID, relationship_type=rel),
        hd.sr.CompositeContentItem(name=Code("SEG", SCHEME, "Lesion segmentation"),
                                   referenced_sop_class_uid=seg.SOPClassUID,
                                   referenced_sop_instance_uid=seg.SOPInstanceUID, relationship_type=rel),
    ]
    if reviewed:
        items += [_text("Grade", str(payload.get("grade") or "")), _text("Referral", str(payload.get("referral") or "")),
                  _text("Signed by", str(payload.get("signed_by") or ""))]
    decisions = payload.get("decisions", {})
    in_mask = set(stored.mask_lesion_ids)
    for lesion in res.lesions:
        decision = decisions.get(str(lesion.id))
        if lesion.id not in in_mask and decision in (None, "not reviewed"):
            continue
        group = hd.sr.ContainerContentItem(name=Code("LESION", SCHEME, "Lesion"), relationship_type=rel)
        group.ContentSequence = hd.sr.ContentSequence([
            _num(Code("LESION_ID", SCHEME, "Lesion id"), int(lesion.id), one),
            _num(Code("X", SCHEME, "Centre x"), round(float(lesion.x), 2), px_unit),
            _num(Code("Y", SCHEME, "Centre y"), round(float(lesion.y), 2), px_unit),
            _num(Code("AREA", SCHEME, "Area"), int(lesion.area_px), px_unit),
            _num(Code("SCORE", SCHEME, "Score"), round(float(lesion.score), 5), one),
            _text("Decision", decision or ("in mask" if lesion.id in in_mask else "not shown")),
            _text("Source", lesion.source),
        ], is_root=False)
        items.append(group)
    items.append(_text("Result JSON", json.dumps(result_json, sort_keys=True)))
    root = hd.sr.ContainerContentItem(name=REPORT_TITLE)
    root.ContentSequence = hd.sr.ContentSequence(items, is_root=False)
    try:
        sr = hd.sr.ComprehensiveSR(
            evidence=[photo, seg], content=root, series_instance_uid=item.series_uid,
            series_number=SERIES_NUMBERS["sr"], sop_instance_uid=item.sop_uid, instance_number=1,
            manufacturer=MANUFACTURER, is_complete=True, is_final=reviewed, is_verified=reviewed,
            verifying_observer_name=_person(str(payload.get("signed_by") or "")) if reviewed else None,
            verifying_organization="GlanceSeg station" if reviewed else None,
            series_description="MA report (reviewed)" if reviewed else "MA report (automatic)",
            previous_versions=previous or None,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise SyncError(f"The report could not be built: {exc}.") from exc
    sr.TimezoneOffsetFromUTC = _tz_now()
    return sr


def to_bytes(ds: Dataset) -> bytes:
    """Encode a dataset as a DICOM Part-10 file (preamble, file meta, Explicit VR Little Endian)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _person(name: str) -> str:
    """Return a user name as a DICOM person name (a single component gets its trailing caret)."""
    name = name.strip() or "Unknown"
    return name if "^" in name else f"{name}^"
