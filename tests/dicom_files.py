"""DICOM files as a fundus camera writes them, for the tests of every way a photograph comes in."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

#: Ophthalmic Photography 8 Bit Image Storage.
OP_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"


def ophthalmic_dicom(rgb: np.ndarray, **attrs: Any) -> bytes:
    """``rgb`` (HxWx3 uint8) as an uncompressed Ophthalmic Photography 8 Bit file, with ``attrs``
    (DICOM keywords) set on top."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = OP_8BIT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "OP"
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()
