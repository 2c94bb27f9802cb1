"""The circular field of view (FOV) of a fundus photograph.

Fundus cameras image the retina through a circular aperture; outside it the photograph is
black. Many archives crop the black margin, so the circle is cut by the image edges
(IDRiD's photographs are cut left, right, top and bottom). The FOV diameter is what turns
the camera's field angle into a pixel scale (:mod:`appliance.imaging.scale`), so the
circle is fitted to the *inner* boundary points only: points on the image border belong to
the crop, not to the aperture, and would shrink the estimate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)

#: Working width for finding the FOV: a coarse mask is enough to fit the circle.
_WORK_PX = 640


@dataclass
class FieldOfView:
    """The field of view of one photograph.

    Attributes
    ----------
    mask
        H×W bool, True inside the FOV (image px).
    center_xy
        Centre of the fitted aperture circle in image px; may lie anywhere for a cropped
        photograph.
    radius_px
        Radius of the fitted circle in image px (may exceed the image half-size when the
        circle is cropped).
    diameter_px
        ``2 * radius_px``; the length the camera's field angle spans.
    edge_seen
        False when no stretch of the aperture's edge is in the photograph (a crop inside
        the aperture): the circle is then a guess, and so is any scale derived from it.
    """

    mask: np.ndarray
    center_xy: tuple[float, float]
    radius_px: float
    diameter_px: float
    edge_seen: bool = True

    @property
    def area_px(self) -> int:
        """int: pixels inside ``mask``."""
        return int(np.count_nonzero(self.mask))

    @property
    def coverage(self) -> float:
        """float: fraction of the fitted circle's area that lies inside ``mask``."""
        circle = np.pi * self.radius_px ** 2
        return float(min(1.0, self.area_px / circle)) if circle > 0 else 0.0

    def crop(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Return ``mask[y0:y1, x0:x1]`` padded with False where the box leaves the image."""
        h, w = self.mask.shape
        out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if sx1 > sx0 and sy1 > sy0:
            out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = self.mask[sy0:sy1, sx0:sx1]
        return out


def _fit_circle(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, float]:
    """Algebraic (Kåsa) least-squares circle fit; returns ``(cx, cy, r)``."""
    a = np.column_stack([xs, ys, np.ones_like(xs)])
    b = xs ** 2 + ys ** 2
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = sol[0] / 2.0, sol[1] / 2.0
    r = float(np.sqrt(max(sol[2] + cx ** 2 + cy ** 2, 0.0)))
    return float(cx), float(cy), r


#: Largest median absolute deviation (grey levels) of a corner that is margin: a margin is
#: flat (sensor noise, JPEG ringing), retina has vessels, texture and vignetting in it.
MARGIN_MAD = 2.0


def _margin_level(bright: np.ndarray, typical: float) -> float:
    """Return the brightness of the margin outside the aperture, 0 when none shows.

    Why: the margin is not always black. A hazy or re-exported photograph (scatter from a
    cataract, a contrast stretch, a grey letterbox) has a margin at 30-60 grey levels, above a
    fixed fraction of the retina's brightness, and the whole frame then passed for the FOV,
    inflating the diameter and so the pixel scale. An aperture leaves the four corners
    outside the circle unless the photograph was cropped inside it; a corner that is flat and
    clearly darker than the retina is margin, and the darkest such corner gives the level. A
    photograph cropped into the circle may have retina in some corners, and dim, vignetted
    retina is not flat, so it is not taken for margin.
    """
    h, w = bright.shape
    k = max(2, min(h, w) // 16)
    levels = []
    for corner in (bright[:k, :k], bright[:k, -k:], bright[-k:, :k], bright[-k:, -k:]):
        level = float(np.median(corner))
        if float(np.median(np.abs(corner - level))) <= MARGIN_MAD and level < 0.5 * typical:
            levels.append(level)
    return min(levels, default=0.0)


def find_fov(rgb: np.ndarray, threshold: float | None = None) -> FieldOfView:
    """Find the field of view of a colour fundus photograph.

    Parameters
    ----------
    rgb
        H×W×3 uint8 RGB (or H×W grey) photograph.
    threshold
        Brightness (0..255, max over channels) separating aperture from margin; default:
        the margin's level plus 0.2 × the FOV's typical brightness above it, at least 8
        above it, so dim photographs keep their dark periphery (:func:`_margin_level`).

    Returns
    -------
    FieldOfView
        ``mask`` is the bright region (largest component, holes filled) within the fitted
        circle. With too few inner boundary points (a photograph cropped to a rectangle
        inside the aperture) the circle is the one circumscribing the image and
        ``edge_seen`` is False: the scale derived from it is a guess, which the quality
        check reports (:func:`appliance.imaging.quality.check_quality`).

    Raises
    ------
    ValueError
        If the array is not H×W or H×W×3.
    """
    img = np.asarray(rgb)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        bright = img[:, :, :3].max(axis=2)
    elif img.ndim == 2:
        bright = img
    else:
        raise ValueError("Expected an H×W×3 RGB or H×W grey image.")
    h, w = bright.shape
    scale = min(1.0, _WORK_PX / max(h, w))
    small = cv2.resize(bright, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1.0 else bright.copy()
    small = small.astype(np.float32)
    if threshold is None:
        typical = float(np.percentile(small, 90))
        margin = _margin_level(small, typical)
        threshold = margin + max(8.0, 0.2 * (typical - margin))
    coarse = (small > threshold).astype(np.uint8)
    coarse = cv2.morphologyEx(coarse, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(coarse, connectivity=8)
    if n > 1:
        biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        coarse = (labels == biggest).astype(np.uint8)
    # Fill holes (dark lesions, the fovea) by flooding the background from outside.
    pad = cv2.copyMakeBorder(coarse, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    flood = pad.copy()
    cv2.floodFill(flood, None, (0, 0), 2)
    coarse = ((flood[1:-1, 1:-1] != 2)).astype(np.uint8)

    sh, sw = coarse.shape
    contours, _ = cv2.findContours(coarse, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = np.concatenate([c.reshape(-1, 2) for c in contours]) if contours else np.zeros((0, 2))
    inner = (pts[:, 0] > 1) & (pts[:, 0] < sw - 2) & (pts[:, 1] > 1) & (pts[:, 1] < sh - 2)
    pts = pts[inner].astype(np.float64)
    edge_seen = pts.shape[0] >= 20
    if edge_seen:
        cx, cy, r = _fit_circle(pts[:, 0], pts[:, 1])
        for _ in range(2):  # drop outliers (notches, glare) and refit
            resid = np.abs(np.hypot(pts[:, 0] - cx, pts[:, 1] - cy) - r)
            keep = resid <= max(2.0, 3.0 * float(np.median(resid)))
            if keep.sum() < 20:
                break
            cx, cy, r = _fit_circle(pts[keep, 0], pts[keep, 1])
        cx, cy, r = (cx + 0.5) / scale - 0.5, (cy + 0.5) / scale - 0.5, r / scale
    else:
        # Not a warning here: the quality check reports it unless a pixel size is configured.
        logger.info("FOV boundary not visible; assuming the circle circumscribing the image")
        cx, cy, r = (w - 1) / 2.0, (h - 1) / 2.0, float(np.hypot(w, h) / 2.0)
    big = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    yy, xx = np.ogrid[:h, :w]
    circle = (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2
    mask = big & circle
    logger.debug("FOV centre (%.1f, %.1f) radius %.1f px, %.0f%% of image", cx, cy, r,
                 100.0 * mask.mean())
    return FieldOfView(mask=mask, center_xy=(float(cx), float(cy)), radius_px=float(r),
                       diameter_px=float(2.0 * r), edge_seen=edge_seen)
