"""Image-quality check: is a photograph gradable?

A detector run on a blurred, dark or badly framed photograph returns confident nonsense;
this check says so first. Every measure is normalised (Weber contrast on a fixed physical
grid, fractions of the FOV), so the thresholds hold across cameras and resolutions.

- focus: RMS of fine detail (structures of ~20–40 µm: capillaries, vessel edges, MAs) in
  the background-normalised green channel; defocus removes exactly that detail;
- illumination: median luminance of the FOV, the fraction of the FOV too dark to read and
  the fraction saturated;
- FOV coverage: how much of the aperture circle lies in the image, and how much of the
  image the FOV fills;
- resolution: the retina's µm per pixel; a thumbnail or a preview shrinks the smallest MAs
  below a pixel, and its focus cannot be measured either (the 20–40 µm detail is gone).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from appliance.imaging.fov import FieldOfView
from appliance.imaging.normalise import normalised_green

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityThresholds:
    """Limits of a gradable photograph (see the module docstring).

    Attributes
    ----------
    min_focus
        Minimum RMS fine detail (Weber units); sharp IDRiD photographs measure
        ~0.010–0.025, blurred by ~50 µm (Gaussian sigma) under 0.0065.
    min_median_luma
        Minimum median luminance (0..255) inside the FOV.
    max_dark_fraction
        Maximum fraction of the FOV darker than ``dark_luma``.
    dark_luma
        Luminance regarded as unreadable.
    max_saturated_fraction
        Maximum fraction of the FOV with luminance at or above 250.
    min_circle_coverage
        Minimum fraction of the aperture circle inside the image.
    min_image_fraction
        Minimum fraction of the image the FOV fills.
    max_um_per_px
        Coarsest pixel a photograph may have. At 30 µm a 125 µm MA is 4 px across and the
        smallest are one; the smallest fundus photographs in use (the ROC challenge's
        768×576 at 45°, ~24 µm/px) pass, and IDRiD shrunk to a fifth (21 µm/px) still
        scores its MAs (docs/performance.md).
    """

    min_focus: float = 0.007
    min_median_luma: float = 25.0
    max_dark_fraction: float = 0.25
    dark_luma: float = 12.0
    max_saturated_fraction: float = 0.10
    min_circle_coverage: float = 0.5
    min_image_fraction: float = 0.2
    max_um_per_px: float = 30.0


@dataclass
class QualityReport:
    """The verdict.

    Attributes
    ----------
    gradable
        True when every measure is within its limit.
    measures
        ``focus``, ``median_luma``, ``dark_fraction``, ``saturated_fraction``,
        ``circle_coverage``, ``image_fraction``.
    reasons
        One sentence per failed measure, keyed by the measure's name (``fov_edge`` when
        the scale is a guess), so a page can name the fault in its own language.
    """

    gradable: bool
    measures: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


def focus_measure(rgb: np.ndarray, fov: FieldOfView, um_per_px: float) -> float:
    """RMS of the 20–40 µm detail of the normalised green channel inside the FOV."""
    norm, inside, _ = normalised_green(rgb, fov.mask, um_per_px, work_um_per_px=20.0)
    inside = cv2.erode(inside.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    if not inside.any():
        return 0.0
    detail = norm - cv2.GaussianBlur(norm, (0, 0), 1.0)
    return float(np.sqrt(np.median(detail[inside] ** 2)) * 1.4826)


def check_quality(rgb: np.ndarray, fov: FieldOfView, um_per_px: float,
                  limits: QualityThresholds = QualityThresholds(), scale_known: bool = False) -> QualityReport:
    """Judge whether a photograph is gradable.

    Parameters
    ----------
    rgb
        H×W×3 uint8 RGB photograph.
    fov
        Its field of view.
    um_per_px
        Image pixel size in µm.
    limits
        Thresholds.
    scale_known
        True when ``um_per_px`` was configured rather than derived from the field of view.
        Without it, a photograph whose field-of-view edge is not visible is ungradable:
        every MA size rule would rest on a guessed scale (a 100 px crop was read at
        90 µm/px, its MAs as single pixels). The focus verdict is then left out, since
        its detail band sits on that guessed grid.

    Returns
    -------
    QualityReport
    """
    rgb = np.asarray(rgb)
    h, w = rgb.shape[:2]
    step = max(1, int(round(max(h, w) / 1000)))
    small = rgb[::step, ::step].astype(np.float32)
    luma = 0.299 * small[:, :, 0] + 0.587 * small[:, :, 1] + 0.114 * small[:, :, 2]
    inside = fov.mask[::step, ::step]
    m: dict[str, float] = {}
    reasons: dict[str, str] = {}
    m["image_fraction"] = float(fov.mask.mean())
    m["circle_coverage"] = fov.coverage
    if inside.any():
        vals = luma[inside]
        m["median_luma"] = float(np.median(vals))
        m["dark_fraction"] = float(np.mean(vals < limits.dark_luma))
        m["saturated_fraction"] = float(np.mean(vals >= 250.0))
        m["focus"] = focus_measure(rgb, fov, um_per_px)
    else:
        m.update(median_luma=0.0, dark_fraction=1.0, saturated_fraction=0.0, focus=0.0)
    if m["image_fraction"] < limits.min_image_fraction:
        reasons["image_fraction"] = f"The field of view fills only {100 * m['image_fraction']:.0f}% of the image."
    if m["circle_coverage"] < limits.min_circle_coverage:
        reasons["circle_coverage"] = f"Only {100 * m['circle_coverage']:.0f}% of the field of view is in the image."
    scale_guessed = not (fov.edge_seen or scale_known)
    if scale_guessed:
        reasons["fov_edge"] = ("No edge of the field of view is in the photograph, so its scale is unknown; "
                               "set [imaging] um_per_px for this camera.")
    if m["median_luma"] < limits.min_median_luma:
        reasons["median_luma"] = f"The photograph is too dark (median luminance {m['median_luma']:.0f})."
    if m["dark_fraction"] > limits.max_dark_fraction:
        reasons["dark_fraction"] = f"{100 * m['dark_fraction']:.0f}% of the field of view is too dark to read."
    if m["saturated_fraction"] > limits.max_saturated_fraction:
        reasons["saturated_fraction"] = f"{100 * m['saturated_fraction']:.0f}% of the field of view is overexposed."
    too_coarse = not scale_guessed and um_per_px > limits.max_um_per_px
    if too_coarse:
        reasons["resolution"] = (f"The photograph's resolution ({um_per_px:.0f} µm per pixel) is too coarse "
                                 f"to show microaneurysms (at most {limits.max_um_per_px:.0f}); use the "
                                 "camera's full-size image, not a preview.")
    if m["focus"] < limits.min_focus and not (scale_guessed or too_coarse):  # measured on a grid set by the scale
        reasons["focus"] = f"The photograph is out of focus (fine detail {m['focus']:.4f})."
    report = QualityReport(gradable=not reasons, measures=m, reasons=reasons)
    logger.debug("quality %s: %s", "gradable" if report.gradable else "ungradable", m)
    return report

