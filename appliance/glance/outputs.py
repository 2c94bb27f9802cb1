"""The files ``glanceseg segment`` writes: the contract other tools rely on (DESIGN.md).

``lesions.json`` (every candidate with its score), ``mask.png`` (only the lesions the
appliance would show), ``overlay.png`` (the photograph with lesion contours) and
``score.png`` (16-bit per-pixel score for pixel-level curves).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.errors import OutputError
from appliance.glance.lesions import SegmentationResult

logger = logging.getLogger(__name__)

SHOWN_BGR = (0, 255, 255)   # yellow: shown lesions
FAINT_BGR = (255, 160, 0)   # blue: candidates below the display threshold


def lesions_document(result: SegmentationResult, image_name: str) -> dict[str, Any]:
    """Return the ``lesions.json`` document for ``result``."""
    return {
        "image": image_name,
        "width": result.width,
        "height": result.height,
        "mode": result.mode,
        "model": {"name": result.model_name, "sha256": result.model_sha256},
        "display_threshold": result.display_threshold,
        "um_per_px": None if result.um_per_px is None else round(float(result.um_per_px), 4),
        "gradable": result.gradable,
        "quality": {k: round(float(v), 4) for k, v in result.quality.items()},
        "quality_reasons": dict(result.quality_reasons),
        "lesions": [lesion.to_json() for lesion in result.lesions],
        "timings_ms": {k: round(float(v), 1) for k, v in result.timings_ms.items()},
        **({"gaze_samples": result.gaze_samples} if result.gaze_samples is not None else {}),
        **({"gaze_calibration": result.gaze_calibration} if result.gaze_calibration else {}),
    }


#: Spread of a model mask's pixel scores around the lesion centre, as a fraction of the
#: mask's equivalent radius (chosen on IDRiD_01-12; docs/performance.md).
MODEL_MASK_SIGMA = 0.75


def score_map(result: SegmentationResult) -> np.ndarray:
    """Return an H×W uint16 map: each lesion's pixels carry ``score × 65535`` (max where they overlap).

    Pixels of a model mask are weighted down with their distance from the lesion centre
    (a Gaussian of ``MODEL_MASK_SIGMA`` × the mask's equivalent radius): zero-shot, the
    decoder fills its prompt box (DESIGN.md), so a rim pixel of its mask is less likely
    to be MA than the dark dot at its centre. A saliency mask is the dot's own
    half-contrast region and keeps one value. Only the pixel-level curves read this map;
    ``mask.png`` and the lesion scores are unchanged.
    """
    out = np.zeros((result.height, result.width), dtype=np.uint16)
    for lesion in result.lesions:
        if lesion.mask is None:
            continue
        x0, y0 = lesion.bbox[0], lesion.bbox[1]
        h, w = lesion.mask.shape
        view = out[y0:y0 + h, x0:x0 + w]
        value = np.full((h, w), min(max(lesion.score, 0.0), 1.0) * 65535)
        if lesion.source == "model":
            sigma = max(1.0, MODEL_MASK_SIGMA * float(np.sqrt(lesion.area_px / np.pi)))
            yy, xx = np.mgrid[y0:y0 + h, x0:x0 + w]
            value *= np.exp(-((xx - lesion.x) ** 2 + (yy - lesion.y) ** 2) / (2.0 * sigma ** 2))
        np.maximum(view, np.where(lesion.mask, np.rint(value), 0).astype(np.uint16), out=view)
    return out


def overlay(rgb: np.ndarray, result: SegmentationResult, show_faint: bool = False) -> np.ndarray:
    """Return a BGR copy of the photograph with the contours of the shown lesions drawn on it."""
    canvas = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    thickness = max(1, round(min(result.width, result.height) / 1000))
    for lesion in result.lesions:
        shown = lesion.score >= result.display_threshold
        if lesion.mask is None or not (shown or show_faint):
            continue
        contours, _ = cv2.findContours(lesion.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        offset = (int(lesion.bbox[0]), int(lesion.bbox[1]))
        cv2.drawContours(canvas, contours, -1, SHOWN_BGR if shown else FAINT_BGR, thickness, offset=offset)
        if shown:
            radius = int(max(lesion.bbox[2] - lesion.bbox[0], lesion.bbox[3] - lesion.bbox[1]))
            cv2.circle(canvas, (round(lesion.x), round(lesion.y)), radius + 6 * thickness, SHOWN_BGR, thickness)
    return canvas


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - OpenCV cannot fail on a valid array
        raise RuntimeError("PNG encoding failed.")
    return buf.tobytes()


def check_out_dir(out_dir: Path) -> None:
    """Make sure ``out_dir`` is, or can be created as, a writable folder; create nothing.

    Why: ``glanceseg segment`` checks this before it segments, so an ``--out`` that names
    a file, or a folder it cannot write, is refused in one sentence at once instead of with
    a traceback after a minute of work; and a refused photograph leaves no empty folder.

    Raises
    ------
    OutputError
        If ``out_dir`` or a parent exists and is not a folder, or the folder that would
        hold it is not writable.
    """
    existing = out_dir.absolute()
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{existing} exists and is not a folder; --out must name a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"The output folder {existing} is not writable.")


def _make_out_dir(out_dir: Path) -> None:
    check_out_dir(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {out_dir}: {exc.strerror or exc}.") from exc


def write_outputs(result: SegmentationResult, rgb: np.ndarray, image_name: str, out_dir: Path) -> dict[str, Path]:
    """Write the contract files into ``out_dir`` (created if needed), each atomically.

    Returns
    -------
    dict[str, Path]
        The paths written, by name (``lesions``, ``mask``, ``overlay``, ``score``).

    Raises
    ------
    OutputError
        If ``out_dir`` is not a writable folder or a file cannot be written.
    """
    _make_out_dir(out_dir)
    paths = {
        "lesions": out_dir / "lesions.json",
        "mask": out_dir / "mask.png",
        "overlay": out_dir / "overlay.png",
        "score": out_dir / "score.png",
    }
    try:
        # A reused folder's lesions.json belongs to the previous run: remove it before the
        # images change, so a run cut short never leaves it beside new images as if complete.
        paths["lesions"].unlink(missing_ok=True)
        _atomic_write(paths["mask"], _png(result.mask()))
        _atomic_write(paths["score"], _png(score_map(result)))
        _atomic_write(paths["overlay"], _png(overlay(rgb, result)))
        # lesions.json last: its presence means the folder is complete.
        _atomic_write(paths["lesions"], json.dumps(lesions_document(result, image_name), indent=1).encode())
    except OSError as exc:
        raise OutputError(f"Cannot write the results into {out_dir}: {exc.strerror or exc}.") from exc
    logger.info("wrote %d lesions (%d shown) to %s", len(result.lesions), len(result.shown), out_dir)
    return paths
