"""Reading fundus photographs: JPEG, PNG, TIFF and DICOM ophthalmic photographs.

Every photograph enters the appliance through :func:`load_photograph`, which refuses
anything that would make the rest of the pipeline return confident nonsense or exhaust a
small device: non-images, empty or truncated files, decompression bombs (the pixel count
is checked from the header, before decoding), and bit depths or channel layouts a fundus
camera does not produce.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from appliance.config import ImagingConfig
from appliance.errors import ImageError
from appliance.imaging.scale import FOV_DEG_RANGE, UM_PER_PX_RANGE

logger = logging.getLogger(__name__)

DICOM_MAGIC_OFFSET = 128
JPEG_MAGIC = b"\xff\xd8\xff"
#: How each raster format read here begins.
_RASTER_MAGIC = {JPEG_MAGIC: "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}
#: Lossy transfer syntaxes and the compression method each declares (PS3.3 C.7.6.1.1.5.1).
LOSSY_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG Extended
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",  # JPEG 2000
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",  # High-Throughput JPEG 2000
}
#: PIL modes accepted, and what they become. Grey ("L", 16-bit "I;16") is a red-free
#: photograph: its single channel is used as all three, so the green channel carries it.
#: The EXIF tag saying how the stored pixels must be turned for display.
_EXIF_ORIENTATION = 0x0112
#: The Exif sub-IFD and its tags for the moment the photograph was taken (and its UTC offset).
_EXIF_IFD, _EXIF_DATETIME_ORIGINAL, _EXIF_OFFSET_TIME_ORIGINAL = 0x8769, 0x9003, 0x9011
_ACCEPTED_MODES = {"RGB", "RGBA", "L", "P", "I;16", "I;16B", "I;16L", "CMYK", "YCbCr"}
#: (7FE0,0010) Pixel Data as it begins in a little-endian DICOM file.
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
#: Ophthalmic Photography 8 and 16 Bit: their Pixel Spacing is the nominal size of a pixel on
#: the retina (PS3.3 C.8.17.2), the photograph's scale stated outright.
_OPHTHALMIC_PHOTOGRAPHY = {"1.2.840.10008.5.1.4.1.1.77.1.5.1", "1.2.840.10008.5.1.4.1.1.77.1.5.2"}
#: DICOM photometric interpretations read, for one sample per pixel and for three. pydicom turns
#: the YCbCr ones to RGB; the retired ones (ARGB, CMYK, HSV) no camera writes any more.
_PHOTOMETRICS = {False: {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"},
                 True: {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT"}}
#: What Pillow and pydicom raise on a malformed file, wherever they meet the damage: Pillow
#: while parsing the header (a PNG or JPEG cut inside its header or EXIF block raises OSError,
#: a TIFF with impossible tiles ValueError), pydicom lazily when an element is first read (an
#: unknown VR is NotImplementedError, a value of the wrong length its BytesLengthException, a
#: Deflated Explicit VR file cut short zlib.error).
_CORRUPT_FILE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, NotImplementedError)


@dataclass
class Photograph:
    """A decoded fundus photograph.

    Attributes
    ----------
    rgb
        H×W×3 uint8 array, RGB order.
    source
        File name or ``"upload"``. A camera or a technician may name a file after the
        patient (``Smith_John_1957-03-02_OD.jpg``): it is kept in the store and named in
        refusals to the operator, never written to the log.
    sha256
        Hex sha256 of the file's bytes: the stable key of this photograph in caches and the
        store.
    fov_deg
        The camera's field-of-view angle when the file states it (DICOM), else None.
    dicom
        Non-identifying DICOM attributes the export carries on: the camera's (modality,
        manufacturer, laterality, ...) when the input was DICOM, and whether its pixels went
        through lossy compression (``LossyImageCompression`` "01", method and ratio) for a
        JPEG or a DICOM with a lossy transfer syntax, which the exported photograph must
        declare (PS3.3 C.7.6.1.1.5), ``AcquisitionDateTime`` (a DICOM DT) when the file
        records when it was taken (DICOM, or EXIF DateTimeOriginal), and an ophthalmic
        photograph's ``PixelSpacing`` (mm on the retina, row\\column) where it is plausible.
    """

    rgb: np.ndarray = field(repr=False)
    source: str
    sha256: str
    fov_deg: Optional[float] = None
    dicom: dict[str, Any] = field(default_factory=dict)

    @property
    def um_per_px(self) -> Optional[float]:
        """float or None: the retinal size of a pixel in µm, where the file states it.

        From an ophthalmic photograph's Pixel Spacing (kept in :attr:`dicom`, so a study
        opened again from the store keeps it): the camera's own calibration, which beats a
        field angle turned into a size through the measured FOV diameter, and the only scale
        of a photograph cropped inside the aperture.
        """
        spacing = str(self.dicom.get("PixelSpacing") or "")
        try:
            row_mm, col_mm = (float(v) for v in spacing.split("\\"))
        except ValueError:
            return None
        return (row_mm + col_mm) / 2 * 1000.0

    @property
    def width(self) -> int:
        """int: width in px."""
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        """int: height in px."""
        return int(self.rgb.shape[0])


def load_photograph(
    data: Union[str, Path, bytes], config: ImagingConfig, name: Optional[str] = None
) -> Photograph:
    """Read and validate a fundus photograph.

    Parameters
    ----------
    data
        A file path, or the file's bytes (a browser upload).
    config
        Limits: ``max_file_mb`` and ``max_megapixels``.
    name
        Name to record as the source for bytes input.

    Returns
    -------
    Photograph
        The decoded photograph.

    Raises
    ------
    ImageError
        - the file does not exist, is empty or larger than ``max_file_mb``;
        - it is not an image the appliance reads (JPEG, PNG, TIFF, DICOM);
        - it is truncated or corrupt;
        - its pixel count exceeds ``max_megapixels`` (a decompression bomb);
        - its bit depth or channel layout is not one a fundus camera produces.
    """
    if isinstance(data, (str, Path)):
        path = Path(data)
        source = name or path.name
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise ImageError(f"{source}: no such file.") from exc
        except OSError as exc:
            raise ImageError(f"{source}: cannot be read ({exc.strerror}).") from exc
        if not path.is_file():
            raise ImageError(f"{source}: not a regular file.")
        _check_file_size(size, source, config)
        raw = path.read_bytes()
    else:
        raw = bytes(data)
        source = name or "upload"
        _check_file_size(len(raw), source, config)
    digest = hashlib.sha256(raw).hexdigest()
    try:
        if is_dicom(raw):
            rgb, fov_deg, meta = _decode_dicom(raw, source, config)
        else:
            (rgb, meta), fov_deg = _decode_raster(raw, source, config), None
            if raw[:3] == JPEG_MAGIC:
                meta.update(_lossy(rgb.nbytes / len(raw)))
    except ImageError:
        raise
    except _CORRUPT_FILE_ERRORS + _pydicom_errors() as exc:
        # Why here, once: damage anywhere in a file (a copy cut short inside its header) must be
        # a clear refusal, never a traceback that stops the CLI or a whole USB import.
        raise ImageError(f"{source}: the file is truncated or corrupt ({type(exc).__name__}: {exc}).") from exc
    # The file's name stays out of the log (see Photograph.source); refusals above name it to the
    # operator who chose the file, as they must.
    logger.debug("loaded a photograph (%dx%d)", rgb.shape[1], rgb.shape[0])
    return Photograph(rgb=np.ascontiguousarray(rgb), source=source, sha256=digest, fov_deg=fov_deg, dicom=meta)


def _pydicom_errors() -> tuple[type[BaseException], ...]:
    """pydicom's own exception for a value of the wrong length (not a ValueError)."""
    from pydicom.errors import BytesLengthException

    return (BytesLengthException,)


def _check_file_size(size: int, source: str, config: ImagingConfig) -> None:
    if size == 0:
        raise ImageError(f"{source}: the file is empty.")
    if size > config.max_file_mb * 1024 * 1024:
        raise ImageError(f"{source}: the file is {size / 2**20:.0f} MB, over the {config.max_file_mb} MB limit.")


def _check_pixels(width: int, height: int, source: str, config: ImagingConfig) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"{source}: the image has no pixels.")
    megapixels = width * height / 1e6
    if megapixels > config.max_megapixels:
        raise ImageError(
            f"{source}: {width}x{height} is {megapixels:.0f} megapixels, over the "
            f"{config.max_megapixels:.0f} megapixel limit (a fundus photograph is about 12)."
        )


def is_dicom(raw: bytes) -> bool:
    """Whether ``raw`` (a file, or at least its first 256 bytes) is a DICOM file.

    Camera exports name their DICOM files without an extension (``IM000001``): this is how a
    folder import tells them from the other files on a stick.
    """
    return raw[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + 4] == b"DICM" or _is_bare_dicom(raw)


def _is_bare_dicom(raw: bytes) -> bool:
    """Whether ``raw`` is a DICOM file without its 128-byte preamble and "DICM" prefix.

    Why: older exporters and a dataset saved as it came over the network write none; such a
    file was refused as "not an image". It then opens with a little-endian File Meta
    (0002,00xx) or Identifying (0008,00xx) element, which no JPEG, PNG or TIFF does.
    """
    return len(raw) > 8 and raw[:2] in (b"\x02\x00", b"\x08\x00") and raw[3] == 0


def _decode_raster(raw: bytes, source: str, config: ImagingConfig) -> tuple[np.ndarray, dict[str, Any]]:
    with warnings.catch_warnings():
        # PIL's own bomb check warns or raises on its fixed limit; ours is checked below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(raw))
        except UnidentifiedImageError as exc:
            kind = next((k for magic, k in _RASTER_MAGIC.items() if raw.startswith(magic)), None)
            if kind:
                # Why: "not a JPEG, PNG, TIFF or DICOM" about a file that is a JPEG sent the
                # technician round in circles; what is wrong is its depth or layout.
                raise ImageError(
                    f"{source}: a {kind} file the appliance cannot decode: a bit depth or layout no colour "
                    "photograph uses (a 12-bit JPEG, a floating-point TIFF), or damage. Export it as 8-bit "
                    "JPEG, or as 8- or 16-bit PNG or TIFF."
                ) from exc
            raise ImageError(f"{source}: not an image the appliance reads (JPEG, PNG, TIFF or DICOM).") from exc
        except Image.DecompressionBombError as exc:
            raise ImageError(
                f"{source}: the image is far over the {config.max_megapixels:.0f} megapixel limit "
                "(a decompression bomb)."
            ) from exc
        if image.format not in ("JPEG", "PNG", "TIFF", "MPO"):
            raise ImageError(f"{source}: {image.format} files are not accepted; use JPEG, PNG, TIFF or DICOM.")
        _check_pixels(image.width, image.height, source, config)
        pages = _full_size_pages(image) if image.format == "TIFF" else 1
        if pages > 1:
            # As with a multi-frame DICOM: which page is the photograph to read (colour, red-free,
            # one of a stereo pair) is not ours to guess, and the first was taken in silence.
            raise ImageError(f"{source}: the TIFF file holds {pages} photographs; export one photograph per file.")
        if image.mode not in _ACCEPTED_MODES:
            raise ImageError(
                f"{source}: unsupported bit depth or channel layout ({image.mode}); expected 8-bit RGB, "
                "8- or 16-bit grey."
            )
        wide_colour = image.mode in ("RGB", "RGBA") and _raw_mode(image).endswith(("16B", "16L", "16N"))
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # our limit was applied above
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{source}: the file is truncated or corrupt ({exc}).") from exc
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    exif = image.getexif()
    meta: dict[str, Any] = {}
    acquired = _exif_acquired(exif)
    if acquired:
        meta["AcquisitionDateTime"] = acquired
    if wide_colour:
        # PIL keeps only the high byte of 16-bit colour, so 12-bit data comes out black.
        image = Image.fromarray(_decode_wide_colour(raw, source))
        transpose = _EXIF_TRANSPOSE.get(exif.get(_EXIF_ORIENTATION, 1))
        return np.asarray(image if transpose is None else image.transpose(transpose)), meta
    if exif.get(_EXIF_ORIENTATION, 1) != 1:
        # A camera held sideways (or a phone adapter) stores the pixels as shot and says how to
        # turn them; every viewer, OpenCV included, shows them turned, so lesions are placed there.
        image = ImageOps.exif_transpose(image)
    return _to_rgb8(image), meta


#: How each EXIF orientation is undone (what ImageOps.exif_transpose does).
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


#: TIFF NewSubfileType (254) and its bit for a reduced-resolution copy (a preview, a thumbnail).
_TIFF_SUBFILE_TYPE, _TIFF_REDUCED = 254, 1


def _full_size_pages(image: Image.Image) -> int:
    """How many pages of a TIFF are images in their own right (its previews not counted)."""
    pages = 0
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        pages += not int(image.tag_v2.get(_TIFF_SUBFILE_TYPE, 0)) & _TIFF_REDUCED
    image.seek(0)
    return pages


def _raw_mode(image: Image.Image) -> str:
    """The stored pixel layout of an image not yet loaded (``"RGB;16B"`` for 48-bit PNG), or ""."""
    if not image.tile:
        return ""
    args = image.tile[0][3]
    return str(args[0] if isinstance(args, tuple) else args)


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    """Reduce 16-bit samples to 8 bits by the bits the photograph actually uses.

    Why: a 10-, 12- or 14-bit sensor's values are often stored in 16-bit PNG or TIFF without
    saying so (PNG's sBIT is optional, TIFF has none); taking the high byte made such a
    photograph almost black ("too dark", no lesions). The shift keeps the top 8 of the bits
    in use, so data spanning the full 16 bits is reduced exactly as before (``>> 8``).
    """
    peak = int(pixels.max()) if pixels.size else 0
    shift = min(16, max(8, peak.bit_length())) - 8
    return (pixels >> shift).astype(np.uint8)


def _decode_wide_colour(raw: bytes, source: str) -> np.ndarray:
    """Decode a 16-bit-per-channel colour PNG or TIFF to H×W×3 uint8 RGB (over black where transparent)."""
    import cv2

    pixels = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)  # stored order, no EXIF turn
    if pixels is None or pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ImageError(f"{source}: the 16-bit colour image cannot be decoded.")
    rgb = _to_8bit(pixels[:, :, 2::-1])
    if pixels.shape[2] == 4:
        rgb = _over_black(rgb, _to_8bit(pixels[:, :, 3]))  # alpha by its own depth: 4095 or 65535 is opaque
    return np.ascontiguousarray(rgb)


def _exif_acquired(exif: Any) -> str:
    """When the camera took the photograph, as a DICOM DT (``YYYYMMDDHHMMSS[&ZZXX]``), or "".

    EXIF's DateTimeOriginal is the camera's local clock; OffsetTimeOriginal, where the camera
    writes it, says which. The export's AcquisitionDateTime then tells the PACS when the eye
    was photographed, not when the file reached the appliance.
    """
    try:
        tags = exif.get_ifd(_EXIF_IFD)
    except (KeyError, ValueError, TypeError, AttributeError):
        return ""
    stamp = str(tags.get(_EXIF_DATETIME_ORIGINAL) or "").strip()
    digits = stamp.replace(":", "").replace(" ", "")
    if len(digits) != 14 or not digits.isdigit() or digits.startswith("0000"):
        return ""  # absent, or a camera whose clock was never set
    offset = str(tags.get(_EXIF_OFFSET_TIME_ORIGINAL) or "").strip()
    if len(offset) == 6 and offset[0] in "+-" and offset[1:3].isdigit() and offset[3] == ":" and offset[4:].isdigit():
        digits += offset.replace(":", "")
    return digits


def _to_rgb8(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I;16"):
        grey = np.asarray(image, dtype=np.uint16)
        return np.repeat(_to_8bit(grey)[:, :, None], 3, axis=2)
    if image.mode == "RGBA" or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"))
        return _over_black(rgba[:, :, :3], rgba[:, :, 3])
    if image.mode == "L":
        return np.repeat(np.asarray(image)[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def _over_black(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite H×W×3 uint8 ``rgb`` over black by its H×W uint8 ``alpha``.

    Why: where a photograph is transparent there is no photograph, which in a fundus
    photograph is the black outside the aperture. Dropping the alpha showed whatever the
    pixels held there (white, often), and the field-of-view finder took it for retina: the
    photograph came out "overexposed" with "no edge of the field of view".
    """
    if alpha.size == 0 or int(alpha.min()) == 255:
        return rgb
    return ((rgb.astype(np.uint16) * alpha[:, :, None] + 127) // 255).astype(np.uint8)


def _lossy(ratio: float, method: Optional[str] = None, source: Any = None) -> dict[str, str]:
    """The lossy-compression record of a photograph; a DICOM ``source``'s own values win.

    Multi-valued ones (a photograph compressed twice) keep every value, ``\\``-joined as
    DICOM writes them.
    """
    def own(keyword: str) -> str:
        if source is None or source.get(keyword) in (None, ""):
            return ""
        from pydicom.multival import MultiValue

        value = source.get(keyword)
        return "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)

    return {"LossyImageCompression": "01",
            "LossyImageCompressionMethod": own("LossyImageCompressionMethod") or method or "ISO_10918_1",
            "LossyImageCompressionRatio": own("LossyImageCompressionRatio") or f"{ratio:.2f}"}


def _decode_dicom(raw: bytes, source: str, config: ImagingConfig) -> tuple[np.ndarray, Optional[float], dict[str, Any]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    _check_inflated_size(raw, source, config)
    bare = _is_bare_dicom(raw)
    try:
        with warnings.catch_warnings():
            # pydicom both logs and warns about a file cut short; the warning printed its own
            # source line on the console. The refusal below says what matters.
            warnings.simplefilter("ignore", UserWarning)
            ds = pydicom.dcmread(io.BytesIO(raw), force=bare)
    except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
        raise ImageError(f"{source}: the DICOM file is corrupt ({exc}).") from exc
    if bare and "TransferSyntaxUID" not in ds.file_meta:
        # A bare dataset names no transfer syntax: the encoding pydicom found is the one.
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit else
                                          pydicom.uid.ExplicitVRLittleEndian if little else
                                          pydicom.uid.ExplicitVRBigEndian)
    if "PixelData" not in ds:
        if _PIXEL_DATA_TAG in raw:
            # pydicom drops an encapsulated (JPEG) Pixel Data cut short, with only a warning.
            raise ImageError(f"{source}: the file is truncated or corrupt (it ends inside its pixel data).")
        raise ImageError(f"{source}: the DICOM file holds no image.")
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)  # an empty value is None
    _check_pixels(cols, rows, source, config)
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise ImageError(f"{source}: multi-frame DICOM images are not accepted; export one photograph per file.")
    bits = int(ds.get("BitsAllocated") or 8)
    samples = int(ds.get("SamplesPerPixel") or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if bits not in (8, 16) or samples not in (1, 3) or photometric not in _PHOTOMETRICS[samples == 3]:
        raise ImageError(
            f"{source}: unsupported bit depth or channel layout ({bits} bits, {samples} samples per pixel, "
            f"{photometric or 'no photometric interpretation'})."
        )
    _check_frame_size(ds, cols, rows, source)
    try:
        # pydicom >= 3 returns YCbCr photographs (YBR_FULL, and the YBR_FULL_422 of a JPEG
        # Baseline export, what most fundus cameras write) already turned to RGB.
        pixels = ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, OSError, AttributeError) as exc:
        raise ImageError(f"{source}: the DICOM pixel data cannot be decoded ({exc}).") from exc
    if photometric == "PALETTE COLOR":
        # The stored values index the file's own colour table; read as grey they are nonsense.
        from pydicom.pixels import apply_color_lut

        try:
            pixels = apply_color_lut(pixels, ds)[:, :, :3]
        except (ValueError, IndexError, TypeError) as exc:  # what pydicom raises on a malformed table
            raise ImageError(f"{source}: the file is truncated or corrupt (its colour table: {exc}).") from exc
        if pixels.dtype == np.uint16:  # 16-bit table entries span the full range
            pixels = pixels >> 8
    elif bits == 16:
        # Ophthalmic Photography 16 Bit stores 16 bits whatever the sensor gives (PS3.3
        # C.8.17.2.1.3): a 12-bit camera's values scaled by BitsStored read almost black.
        pixels = _to_8bit(pixels.astype(np.uint16))
    pixels = pixels.astype(np.uint8, copy=False)
    if photometric == "MONOCHROME1":
        # Lowest value white (PS3.3 C.7.6.3.1.2): read as it is, vessels and MAs would be bright.
        pixels = 255 - pixels
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    meta = {
        key: str(ds.get(key))
        for key in ("Modality", "Manufacturer", "ManufacturerModelName", "ImageLaterality", "SOPClassUID")
        if key in ds
    }
    acquired = str(ds.get("AcquisitionDateTime") or "").strip()
    if not acquired and ds.get("AcquisitionDate"):
        acquired = f"{ds.AcquisitionDate}{ds.get('AcquisitionTime') or ''}"
    if acquired[:8].isdigit():  # the camera's own record of when the eye was photographed
        meta["AcquisitionDateTime"] = acquired
    syntax = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", ""))
    if ds.get("LossyImageCompression") == "01" or syntax in LOSSY_TRANSFER_SYNTAXES:
        meta.update(_lossy(rows * cols * samples * bits / 8 / len(raw), LOSSY_TRANSFER_SYNTAXES.get(syntax), ds))
    spacing = _pixel_spacing(ds)
    if spacing:
        meta["PixelSpacing"] = spacing
    return pixels, _field_angle(ds), meta


#: Deflated Explicit VR Little Endian: the whole dataset is zlib-deflated after the file meta.
_DEFLATED = b"1.2.840.10008.1.2.1.99"
#: Explicit VRs whose length takes four bytes (after two reserved ones) instead of two.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def _check_inflated_size(raw: bytes, source: str, config: ImagingConfig) -> None:
    """Refuse a Deflated DICOM that inflates past what the largest photograph accepted needs.

    Why: pydicom inflates the whole dataset in memory before anything in it can be checked; a
    530 kB file took 675 MB, and one of a few MB could take all of a device's memory.
    """
    offset = DICOM_MAGIC_OFFSET + 4 if raw[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + 4] == b"DICM" else 0
    syntax = b""
    while raw[offset:offset + 2] == b"\x02\x00" and offset + 8 <= len(raw):  # the file meta, group 0002
        vr = raw[offset + 4:offset + 6]
        if vr in _LONG_VRS:
            start, length = offset + 12, struct.unpack("<I", raw[offset + 8:offset + 12])[0]
        else:
            start, length = offset + 8, struct.unpack("<H", raw[offset + 6:offset + 8])[0]
        if raw[offset + 2:offset + 4] == b"\x10\x00":  # (0002,0010) Transfer Syntax UID
            syntax = raw[start:start + length].rstrip(b"\0 ")
        offset = start + length
    if syntax != _DEFLATED:
        return
    limit = int(config.max_megapixels * 1e6 * 3 * 2) + 2 ** 24  # 16-bit RGB at the limit, and a header
    inflater, data, total = zlib.decompressobj(-zlib.MAX_WBITS), raw[offset:], 0
    while data and total <= limit:
        total += len(inflater.decompress(data, 2 ** 20))
        data = inflater.unconsumed_tail
    if total > limit:
        raise ImageError(f"{source}: the deflated DICOM file inflates to over {limit / 2 ** 20:.0f} MB, more than a "
                         f"{config.max_megapixels:.0f} megapixel photograph needs (a decompression bomb).")


#: Start-of-frame markers of JPEG (SOF0-15 less DHT, JPG, DAC) and JPEG-LS (SOF55).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}


def _check_frame_size(ds: Any, cols: int, rows: int, source: str) -> None:
    """Refuse compressed pixel data whose own header declares another size than the DICOM's.

    Why: Rows and Columns are checked against the megapixel limit, but the decoder allocates
    what the embedded JPEG or JPEG 2000 header declares: a few-kB file declaring 9000x9000
    inside made the appliance take 850 MB before pydicom noticed the mismatch.
    """
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is None or not syntax.is_encapsulated:
        return
    from pydicom.encaps import generate_frames

    frame = next(generate_frames(ds.PixelData, number_of_frames=1), b"")
    size = _frame_size(frame[:65536])
    if size is not None and size != (cols, rows):
        raise ImageError(f"{source}: the file is truncated or corrupt (its compressed image is {size[0]}x{size[1]}, "
                         f"its header says {cols}x{rows}).")


def _frame_size(head: bytes) -> Optional[tuple[int, int]]:
    """(width, height) declared by the start of a JPEG, JPEG-LS or JPEG 2000 codestream, or None."""
    if head.startswith(b"\xff\xd8"):
        offset = 2
        while offset + 9 <= len(head) and head[offset] == 0xFF:
            marker = head[offset + 1]
            if marker == 0xFF:  # fill byte
                offset += 1
            elif marker in _SOF_MARKERS:
                height, width = struct.unpack(">HH", head[offset + 5:offset + 9])
                return width, height
            else:
                offset += 2 + struct.unpack(">H", head[offset + 2:offset + 4])[0]
        return None
    at = head.find(b"\xff\x4f\xff\x51")  # JPEG 2000: SOC, then SIZ
    if at < 0 or len(head) < at + 24:
        return None
    x_size, y_size, x_origin, y_origin = struct.unpack(">IIII", head[at + 8:at + 24])
    return x_size - x_origin, y_size - y_origin


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _field_angle(ds: Any) -> Optional[float]:
    """The camera's field angle in degrees (0022,000C), or None when absent or implausible.

    Why: an implausible one (0, or a value in another unit) made the photograph's scale, and so
    every MA size rule, nonsense, or stopped its analysis with advice to check the appliance's
    [imaging] fov_deg, which was fine; the configured angle is used instead.
    """
    value = ds.get("HorizontalFieldOfView")
    if value in (None, ""):
        return None
    angle = _number(value)
    if not FOV_DEG_RANGE[0] <= angle <= FOV_DEG_RANGE[1]:
        logger.warning("a DICOM's field angle (%s) is implausible for a fundus camera; [imaging] fov_deg is used",
                       value)
        return None
    return angle


def _pixel_spacing(ds: Any) -> str:
    """An ophthalmic photograph's Pixel Spacing as DICOM writes it (``row\\column`` in mm), or ""."""
    from pydicom.multival import MultiValue

    if str(ds.get("SOPClassUID", "")) not in _OPHTHALMIC_PHOTOGRAPHY or ds.get("PixelSpacing") in (None, ""):
        return ""
    spacing = ds.PixelSpacing
    values = [_number(v) for v in spacing] if isinstance(spacing, MultiValue) and len(spacing) == 2 else []
    if not values or not all(UM_PER_PX_RANGE[0] <= v * 1000 <= UM_PER_PX_RANGE[1] for v in values):
        logger.warning("a DICOM's pixel spacing (%s) is implausible for a fundus photograph; ignored",
                       ds.PixelSpacing)
        return ""
    return "\\".join(f"{v:g}" for v in values)
