"""Reading photographs: every accepted format, and a clear refusal for each kind of bad input."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from appliance.config import ImagingConfig
from appliance.errors import ImageError
from appliance.imaging.io import load_photograph

CFG = ImagingConfig()


def _encode(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _fundus_like(h: int = 64, w: int = 80) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF"])
def test_reads_raster_formats(fmt: str) -> None:
    rgb = _fundus_like()
    photo = load_photograph(_encode(rgb, fmt), CFG, name=f"x.{fmt.lower()}")
    assert photo.rgb.shape == (64, 80, 3) and photo.rgb.dtype == np.uint8
    if fmt != "JPEG":
        np.testing.assert_array_equal(photo.rgb, rgb)
    assert len(photo.sha256) == 64


def test_reads_16bit_grey_as_red_free() -> None:
    grey = (np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * 13)
    photo = load_photograph(_encode(grey, "PNG"), CFG)
    np.testing.assert_array_equal(photo.rgb[:, :, 1], (grey >> 8).astype(np.uint8))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_as_viewers_apply_it(tmp_path: Path, orientation: int) -> None:
    # OpenCV's reader turns the pixels by the EXIF tag, as browsers and PACS viewers do: the oracle.
    import cv2

    rgb = np.zeros((60, 100, 3), np.uint8)
    rgb[5:20, 5:30] = (250, 40, 40)  # a red patch near the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "turned.jpg"
    path.write_bytes(_encode(rgb, "JPEG", exif=exif, quality=95))
    shown = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    photo = load_photograph(path, CFG)
    assert photo.rgb.shape == shown.shape
    assert photo.rgb.shape[:2] == ((60, 100) if orientation == 3 else (100, 60))
    np.testing.assert_allclose(photo.rgb.astype(int), shown.astype(int), atol=2)
    assert not np.array_equal(photo.rgb[5:20, 5:30, 0] > 128, rgb[5:20, 5:30, 0] > 128)


def test_the_cameras_acquisition_time_is_kept(tmp_path: Path) -> None:
    # EXIF DateTimeOriginal (with its offset when the camera writes one) or the DICOM's own record.
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2026:11:20 09:41:07"
    exif.get_ifd(0x8769)[0x9011] = "+05:30"
    photo = load_photograph(_encode(_fundus_like(), "JPEG", exif=exif), CFG)
    assert photo.dicom["AcquisitionDateTime"] == "20261120094107+0530"
    unset = Image.Exif()
    unset.get_ifd(0x8769)[0x9003] = "0000:00:00 00:00:00"  # a camera whose clock was never set
    assert "AcquisitionDateTime" not in load_photograph(_encode(_fundus_like(), "JPEG", exif=unset), CFG).dicom
    assert "AcquisitionDateTime" not in load_photograph(_encode(_fundus_like(), "PNG"), CFG).dicom
    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(_fundus_like())))
    ds.AcquisitionDateTime = "20261119153000"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert load_photograph(buf.getvalue(), CFG).dicom["AcquisitionDateTime"] == "20261119153000"


def test_reads_path_and_records_name(tmp_path: Path) -> None:
    path = tmp_path / "eye.png"
    path.write_bytes(_encode(_fundus_like(), "PNG"))
    assert load_photograph(path, CFG).source == "eye.png"


def test_a_file_named_after_the_patient_stays_out_of_the_log(tmp_path: Path, caplog) -> None:
    """A camera or technician may name the file after the patient; the log (journal, support
    bundle) must not carry it, while the photograph still records it for the store."""
    name = "Smith_John_1957-03-02_OD"
    path = tmp_path / f"{name}.png"
    path.write_bytes(_encode(_fundus_like(), "PNG"))
    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(_fundus_like(), fov=400.0)))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
    ds.PixelSpacing = [5.0, 5.0]  # mm: implausible, warned about
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with caplog.at_level("DEBUG", logger="appliance.imaging"):
        assert load_photograph(path, CFG).source == path.name
        load_photograph(buf.getvalue(), CFG, name=f"{name}.dcm")
    assert "field angle" in caplog.text and "pixel spacing" in caplog.text
    assert caplog.records and not any("Smith" in r.getMessage() or "1957" in r.getMessage()
                                      for r in caplog.records), caplog.text


def _dicom_bytes(rgb: np.ndarray, fov: float | None = 45.0, bits: int = 8,
                 syntax: str = ExplicitVRLittleEndian) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.1"  # Ophthalmic Photography 8 Bit
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OP"
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = rgb.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    if fov is not None:
        ds.HorizontalFieldOfView = fov
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def test_reads_dicom_ophthalmic_photograph_with_fov() -> None:
    rgb = _fundus_like()
    photo = load_photograph(_dicom_bytes(rgb), CFG)
    np.testing.assert_array_equal(photo.rgb, rgb)
    assert photo.fov_deg == 45.0
    assert photo.dicom["Modality"] == "OP"


def test_pixel_spacing_of_one_value_is_ignored_not_a_crash() -> None:
    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(_fundus_like())))
    ds.PixelSpacing = "0.004"  # a writer that gave one value where DICOM asks for two
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    photo = load_photograph(buf.getvalue(), CFG)
    assert photo.um_per_px is None and photo.rgb.shape == (64, 80, 3)


@pytest.mark.parametrize("encoding", ["native YBR_FULL", "JPEG Baseline YBR_FULL_422"])
def test_reads_ycbcr_dicom_photographs_in_true_colour(encoding: str) -> None:
    # Most fundus cameras export JPEG Baseline, YBR_FULL_422; pydicom returns it as RGB already,
    # and a second conversion (once made here) turned a fundus photograph blue-green.
    import cv2
    from pydicom.encaps import encapsulate
    from pydicom.pixels import convert_color_space
    from pydicom.uid import JPEGBaseline8Bit

    demo = Path(__file__).resolve().parents[2] / "appliance" / "demo" / "IDRiD_03.jpg"
    rgb = np.ascontiguousarray(cv2.imread(str(demo))[1000:1128, 1250:1378, ::-1])
    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(rgb)))
    if encoding.startswith("native"):
        ds.PhotometricInterpretation = "YBR_FULL"
        ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    else:
        ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PixelData = encapsulate([jpeg.tobytes()])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    photo = load_photograph(buf.getvalue(), CFG)
    assert np.abs(photo.rgb.astype(int) - rgb).mean() < 3.0
    # A JPEG-coded source stays lossy in any copy: the export must say so (PS3.3 C.7.6.1.1.5).
    lossy = photo.dicom.get("LossyImageCompression")
    assert lossy == (None if encoding.startswith("native") else "01")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        load_photograph(tmp_path / "nope.jpg", CFG)


@pytest.mark.parametrize("keyword", ["Rows", "BitsAllocated"])
def test_dicom_with_an_empty_image_attribute_is_a_clear_refusal(keyword: str) -> None:
    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(_fundus_like())))
    ds[keyword].value = None  # present, empty: pydicom gives None, which int() does not take
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(ImageError):
        load_photograph(buf.getvalue(), CFG)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_photograph(tmp_path / "e.jpg", CFG)


def test_non_image() -> None:
    with pytest.raises(ImageError, match="not an image"):
        load_photograph(b"%PDF-1.4 this is a report, not a photograph", CFG)


def test_truncated_jpeg() -> None:
    raw = _encode(_fundus_like(256, 256), "JPEG", quality=95)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_photograph(raw[: len(raw) // 2], CFG)


def test_truncated_dicom() -> None:
    raw = _dicom_bytes(_fundus_like())
    with pytest.raises(ImageError):
        load_photograph(raw[: len(raw) - 500], CFG)


def test_truncated_jpeg_dicom_is_called_truncated_not_imageless() -> None:
    # pydicom drops encapsulated pixel data cut short; it was "the DICOM file holds no image".
    import cv2
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(_fundus_like(256, 256))))
    ds.file_meta.TransferSyntaxUID, ds.PhotometricInterpretation = JPEGBaseline8Bit, "YBR_FULL_422"
    ds.PixelData = encapsulate([cv2.imencode(".jpg", _fundus_like(256, 256))[1].tobytes()])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_photograph(raw[: len(raw) - 3000], CFG)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size: the bomb must be refused before decoding."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_from_header() -> None:
    with pytest.raises(ImageError, match="megapixel limit"):
        load_photograph(_png_header_only(50_000, 50_000), CFG)


def test_oversize_file_refused() -> None:
    small = ImagingConfig(max_file_mb=1)
    with pytest.raises(ImageError, match="over the 1 MB limit"):
        load_photograph(b"\xff" * (2 * 1024 * 1024), small)


@pytest.mark.parametrize("mode", ["1", "F", "I", "LA"])
def test_unsupported_layout(mode: str) -> None:
    image = Image.new(mode, (32, 32))
    buf = io.BytesIO()
    image.save(buf, format="TIFF")
    with pytest.raises(ImageError, match="unsupported bit depth or channel layout"):
        load_photograph(buf.getvalue(), CFG)


def test_unsupported_dicom_layout() -> None:
    raw = _dicom_bytes(_fundus_like(), bits=32)
    with pytest.raises(ImageError, match="unsupported bit depth"):
        load_photograph(raw, CFG)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_12bit_data_in_16bit_files_is_not_read_as_black(tmp_path: Path, fmt: str, channels: int) -> None:
    """A 12-bit sensor's values in a 16-bit PNG or TIFF (0..4095, no sBIT) read like the 8-bit
    photograph they came from; taking the high byte made them 0..15 (too dark, no lesions)."""
    import cv2

    rgb = _fundus_like()
    if channels == 1:
        stored, expected = rgb[:, :, 1].astype(np.uint16) << 4, np.repeat(rgb[:, :, 1:2], 3, axis=2)
    else:
        bgr = rgb[:, :, ::-1].astype(np.uint16) << 4
        stored = bgr if channels == 3 else np.dstack([bgr, np.full(bgr.shape[:2], 4095, np.uint16)])
        expected = rgb
    path = tmp_path / f"wide.{fmt.lower()}"
    assert cv2.imwrite(str(path), stored)
    photo = load_photograph(path, CFG)
    np.testing.assert_array_equal(photo.rgb, expected)


def test_full_range_16bit_colour_keeps_its_high_byte(tmp_path: Path) -> None:
    import cv2

    bgr = np.random.default_rng(1).integers(0, 65536, size=(64, 80, 3), dtype=np.uint16)
    bgr[0, 0, 0] = 65535
    path = tmp_path / "full.png"
    assert cv2.imwrite(str(path), bgr)
    np.testing.assert_array_equal(load_photograph(path, CFG).rgb, (bgr[:, :, ::-1] >> 8).astype(np.uint8))


def _exif_jpeg() -> bytes:
    """A phone adapter's JPEG: a long EXIF block (maker notes, thumbnail) before the image data."""
    exif = Image.Exif()
    exif[0x010E] = "x" * 20_000  # ImageDescription, standing in for maker notes and a thumbnail
    return _encode(_fundus_like(), "JPEG", exif=exif)


def _dicom_with_bad_vr() -> bytes:
    raw = _dicom_bytes(_fundus_like())
    rows = b"\x28\x00\x10\x00US"  # (0028,0010) Rows, explicit VR little endian
    assert raw.count(rows) == 1
    return raw.replace(rows, b"\x28\x00\x10\x00\x55\x19")


def _tiled_tiff_without_tile_length() -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, _fundus_like(64, 64), tile=(16, 16), photometric="rgb")
    raw = bytearray(buf.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(raw))) as tif:
        entry = tif.pages[0].tags[323].offset  # TileLength's IFD entry
    raw[entry:entry + 2] = struct.pack("<H", 0xC0DE)  # now a private tag: the tile length is gone
    return bytes(raw)


@pytest.mark.parametrize("damaged", [
    pytest.param(lambda: _encode(_fundus_like(), "PNG")[:20], id="png cut inside its header"),
    pytest.param(lambda: _exif_jpeg()[:5_000], id="jpeg cut inside its EXIF block"),
    pytest.param(_tiled_tiff_without_tile_length, id="tiled tiff without its tile length"),
    pytest.param(_dicom_with_bad_vr, id="dicom with a damaged element"),
    pytest.param(lambda: _dicom_bytes(_fundus_like(), syntax="1.2.840.10008.1.2.1.99")[:-2000],
                 id="deflated dicom cut short"),
])
def test_damage_anywhere_in_the_file_is_a_clear_refusal(damaged) -> None:
    # Pillow and pydicom raise OSError, ValueError, NotImplementedError, ... on damage in a
    # header; each escaped as a traceback (the CLI stopped, a USB import failed as a whole).
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_photograph(damaged(), CFG, name="damaged")


def _grey_dicom(photometric: str, grey: np.ndarray) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(_fundus_like())))
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    del ds.PlanarConfiguration
    ds.Rows, ds.Columns = grey.shape
    ds.PixelData = grey.astype(np.uint8).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_monochrome1_red_free_photograph_is_not_read_inverted() -> None:
    # MONOCHROME1: the lowest value is white. Read as stored, vessels and MAs came out bright.
    green = _fundus_like()[:, :, 1]
    photo = load_photograph(_grey_dicom("MONOCHROME1", 255 - green), CFG)
    np.testing.assert_array_equal(photo.rgb, np.repeat(green[:, :, None], 3, axis=2))


def test_palette_colour_dicom_is_read_through_its_colour_table() -> None:
    # The stored values are indices into the file's table; they were read as grey levels.
    rgb = _fundus_like()
    table, index = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    table, index = table[:256], index.reshape(rgb.shape[:2])
    keep = index < 256
    index = np.where(keep, index, 0)
    lut = np.zeros((256, 3), np.uint16)
    lut[:len(table)] = table.astype(np.uint16) * 257  # 16-bit entries, as most writers store them
    ds = pydicom.dcmread(io.BytesIO(_grey_dicom("PALETTE COLOR", index)))
    for i, colour in enumerate(("Red", "Green", "Blue")):
        ds.add_new(0x00281101 + i, "US", [256, 0, 16])  # the descriptors' VR is ambiguous (US or SS)
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut[:, i].tobytes())
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    photo = load_photograph(buf.getvalue(), CFG)
    np.testing.assert_array_equal(photo.rgb, lut[index].astype(np.uint32) >> 8)


@pytest.mark.parametrize("descriptor", [[256, 0], [256, 0, 12]], ids=["two values", "12-bit entries"])
def test_palette_colour_dicom_with_a_malformed_table_is_refused(descriptor: list[int]) -> None:
    ds = pydicom.dcmread(io.BytesIO(_grey_dicom("PALETTE COLOR", _fundus_like()[:, :, 1])))
    for i, colour in enumerate(("Red", "Green", "Blue")):
        ds.add_new(0x00281101 + i, "US", descriptor)
        setattr(ds, f"{colour}PaletteColorLookupTableData", np.arange(256, dtype=np.uint16).tobytes())
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(ImageError, match="truncated or corrupt \\(its colour table"):
        load_photograph(buf.getvalue(), CFG)


def test_unknown_photometric_interpretation_is_refused() -> None:
    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(_fundus_like())))
    ds.PhotometricInterpretation = "HSV"  # retired; no camera writes it
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(ImageError, match="unsupported bit depth or channel layout.*HSV"):
        load_photograph(buf.getvalue(), CFG)



@pytest.mark.parametrize("keep_file_meta", [True, False], ids=["file meta, no preamble", "bare dataset"])
def test_dicom_without_preamble_is_read(keep_file_meta: bool) -> None:
    # No 128-byte preamble and "DICM" prefix (older exporters, a dataset saved as received):
    # it was refused as "not an image the appliance reads".
    from pydicom.filewriter import write_dataset, write_file_meta_info

    rgb = _fundus_like()
    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(rgb)))
    buf = pydicom.filebase.DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, keep_file_meta is False
    if keep_file_meta:
        write_file_meta_info(buf, ds.file_meta, enforce_standard=False)
    write_dataset(buf, ds)
    raw = buf.getvalue()
    assert b"DICM" not in raw[:132]
    photo = load_photograph(raw, CFG, name="IM000001")
    np.testing.assert_array_equal(photo.rgb, rgb)
    assert photo.fov_deg == 45.0 and photo.dicom["Modality"] == "OP"


def _12bit_jpeg() -> bytes:
    """A 12-bit JPEG's header (SOF1, precision 12): Pillow decodes only 8-bit JPEG."""
    raw = bytearray(_encode(_fundus_like(), "JPEG"))
    sof = raw.index(b"\xff\xc0")
    raw[sof + 1], raw[sof + 4] = 0xC1, 12
    return bytes(raw)


def _float_tiff() -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, _fundus_like().astype(np.float32) / 255, photometric="rgb")
    return buf.getvalue()


@pytest.mark.parametrize("raw, kind", [(_12bit_jpeg(), "JPEG"), (_float_tiff(), "TIFF")], ids=["12-bit jpeg", "float tiff"])
def test_a_jpeg_or_tiff_that_cannot_be_decoded_is_not_called_a_non_image(raw: bytes, kind: str) -> None:
    # It was "not an image the appliance reads (JPEG, PNG, TIFF or DICOM)" about a JPEG.
    with pytest.raises(ImageError, match=f"a {kind} file the appliance cannot decode: a bit depth") as info:
        load_photograph(raw, CFG, name=f"x.{kind.lower()}")
    assert "8-bit JPEG" in str(info.value)


def test_multi_page_tiff_is_refused_as_a_multi_frame_dicom_is() -> None:
    # Its first page was read in silence: red-free, colour or one of a stereo pair, by chance.
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.stack([_fundus_like(), _fundus_like()[::-1]]), photometric="rgb")
    with pytest.raises(ImageError, match="holds 2 photographs; export one photograph per file"):
        load_photograph(buf.getvalue(), CFG)


def test_tiff_with_a_preview_page_reads_its_photograph() -> None:
    import tifffile

    rgb = _fundus_like()
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tif:
        tif.write(rgb, photometric="rgb")
        tif.write(rgb[::4, ::4], photometric="rgb", subfiletype=1)  # a reduced-resolution preview
    np.testing.assert_array_equal(load_photograph(buf.getvalue(), CFG).rgb, rgb)


@pytest.mark.parametrize("depth", [8, 16])
def test_transparent_surround_is_read_as_the_black_outside_the_aperture(tmp_path: Path, depth: int) -> None:
    # A PNG whose surround is transparent (white underneath, as editors leave it): the alpha was
    # dropped, the white read as retina, and the photograph came out overexposed and edgeless.
    import cv2

    rgb = _fundus_like()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :10] = 0
    alpha[:, 10:20] = 128
    stored = rgb.copy()
    stored[:, :10] = 255
    path = tmp_path / "masked.png"
    if depth == 8:
        Image.fromarray(np.dstack([stored, alpha])).save(path)
    else:
        assert cv2.imwrite(str(path), np.dstack([stored[:, :, ::-1], alpha]).astype(np.uint16) * 257)
    photo = load_photograph(path, CFG)
    assert (photo.rgb[:, :10] == 0).all()
    np.testing.assert_allclose(photo.rgb[:, 10:20].astype(int), rgb[:, 10:20].astype(int) / 2, atol=1)
    np.testing.assert_array_equal(photo.rgb[:, 20:], rgb[:, 20:])



def _jpeg_frame(rgb: np.ndarray, declared: int = 0) -> bytes:
    """``rgb`` as a JPEG codestream; with ``declared``, its header claims declared x declared px."""
    raw = bytearray(_encode(rgb, "JPEG"))
    if declared:
        sof = raw.index(b"\xff\xc0")
        raw[sof + 5:sof + 9] = struct.pack(">HH", declared, declared)
    return bytes(raw)


def _j2k_frame(rgb: np.ndarray, declared: int = 0) -> bytes:
    """``rgb`` as a JPEG 2000 codestream; with ``declared``, its SIZ claims declared x declared px."""
    raw = bytearray(_encode(rgb, "JPEG2000", no_jp2=True, irreversible=False))
    if declared:
        siz = raw.index(b"\xff\x4f\xff\x51")
        raw[siz + 8:siz + 16] = struct.pack(">II", declared, declared)
    return bytes(raw)


@pytest.mark.parametrize("frame, syntax, photometric", [
    (_jpeg_frame, "1.2.840.10008.1.2.4.50", "YBR_FULL_422"),
    (_j2k_frame, "1.2.840.10008.1.2.4.90", "RGB"),
], ids=["jpeg", "jpeg 2000"])
def test_dicom_whose_compressed_image_declares_a_bomb_is_refused_before_decoding(frame, syntax, photometric) -> None:
    # Rows and Columns were checked, the embedded codestream's own header not: a few-kB file
    # declaring 9000x9000 inside made the decoder take ~850 MB before pydicom saw the mismatch.
    from pydicom.encaps import encapsulate

    rgb = _fundus_like()
    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(rgb)))
    ds.file_meta.TransferSyntaxUID, ds.PhotometricInterpretation = syntax, photometric
    for declared in (9000, 0):
        ds.PixelData = encapsulate([frame(rgb, declared)])
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        if declared:
            with pytest.raises(ImageError, match="its compressed image is 9000x9000, its header says 80x64"):
                load_photograph(buf.getvalue(), CFG)
        else:  # the same file, honest: read
            assert load_photograph(buf.getvalue(), CFG).rgb.shape == (64, 80, 3)


def test_deflated_dicom_that_inflates_past_any_photograph_is_refused_before_reading() -> None:
    # pydicom inflates the whole dataset first: a 530 kB file took 675 MB before any check.
    small = ImagingConfig(max_megapixels=1)  # inflating past 6 MB of pixels and 16 MB of header
    rgb = _fundus_like()
    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(rgb, syntax="1.2.840.10008.1.2.1.99")))
    assert load_photograph(_dicom_bytes(rgb, syntax="1.2.840.10008.1.2.1.99"), small).rgb.shape == (64, 80, 3)
    ds.add_new(0x00091010, "OB", b"\0" * 40 * 2 ** 20)  # a private element of zeros
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert len(buf.getvalue()) < 2 ** 20
    with pytest.raises(ImageError, match="inflates to over 22 MB.*decompression bomb"):
        load_photograph(buf.getvalue(), small)


@pytest.mark.parametrize("bits_stored", [12, 16])
def test_16bit_ophthalmic_dicom_of_a_12bit_sensor_is_not_read_as_black(bits_stored: int) -> None:
    # Ophthalmic Photography 16 Bit declares 16 bits stored whatever the sensor gives; a 12-bit
    # camera's values scaled by BitsStored came out 0..15 ("too dark", no lesions).
    rgb = _fundus_like()
    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(rgb.astype(np.uint16) << 4, bits=16)))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.2"
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    np.testing.assert_allclose(load_photograph(buf.getvalue(), CFG).rgb.astype(int), rgb.astype(int), atol=1)
