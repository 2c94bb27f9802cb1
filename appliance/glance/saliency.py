"""MA-likeness (saliency) map of a fundus photograph, whole FOV or a gaze window.

Why this shape: microaneurysms are small, round, dark-red dots; the structures that fool a
plain dark-blob detector are vessel fragments (crossings, bends, thin capillaries). The map
therefore follows the classic linear top-hat (Spencer et al. 1996; Niemeijer et al. 2005):

1. green channel (best MA contrast), block-averaged to a working scale of about
   ``work_um_per_px`` so every size below is in micrometres, not camera pixels;
2. outside the FOV the image is filled with the nearby FOV average, so the black margin
   does not create edges;
3. ``min over 12 orientations of closing(green, line of length L)``: a line longer than an
   MA fills the dot in every orientation, but the orientation along a vessel leaves the
   vessel, so ``that - green`` keeps MAs and drops vessels (vessel suppression);
4. divided by the local background (median over ``background_um``), which makes it a Weber
   contrast, independent of illumination and camera gain;
5. smoothed with a Gaussian matched to the MA scale: the saliency map.

A noise map (local mean of the top-hat response, which vessels do not inflate) lets the
candidate features express contrast relative to local background texture, and a vessel map
(disc top-hat minus linear top-hat) lets the filter reject dots sitting on vessels.

Every step is a local filter of bounded radius, so a window computed with
:func:`margin_px` of context equals the whole-image result inside it (gaze mode).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

from appliance.imaging.normalise import background as normalise_background
from appliance.imaging.normalise import fill_outside

logger = logging.getLogger(__name__)

N_ORIENTATIONS = 12


@dataclass(frozen=True)
class SaliencyParams:
    """Physical sizes (µm) behind the saliency map; see the module docstring.

    Attributes
    ----------
    work_um_per_px
        Target pixel size of the working grid; the image is block-averaged by the integer
        factor nearest to ``work_um_per_px / um_per_px`` (at least 1).
    line_um
        Length of the linear structuring elements; longer than the largest MA (125 µm).
    background_um
        Median window for the local background level.
    smooth_um
        Gaussian sigma of the matched smoothing (an MA of ~40 µm radius).
    noise_um
        Gaussian sigma of the local-noise estimate.
    vessel_um
        Disc diameter whose top-hat captures vessels as well as MAs.
    fill_um
        Box size of the normalised average used to fill outside the FOV.
    """

    work_um_per_px: float = 8.0
    line_um: float = 150.0
    background_um: float = 300.0
    smooth_um: float = 10.0
    noise_um: float = 150.0
    vessel_um: float = 250.0
    fill_um: float = 300.0


@dataclass
class SaliencyMap:
    """Maps on the working grid of a region of one photograph.

    Attributes
    ----------
    x0, y0
        Image-px origin of the computed region (a multiple of ``factor``).
    factor
        Working pixel = ``factor × factor`` image pixels.
    um_per_px
        Image pixel size in µm; the working pixel is ``factor × um_per_px``.
    maps
        Float32 arrays on the working grid: ``green`` (0..255), ``red``, ``background``,
        ``tophat`` (Weber contrast of dark, non-linear structures), ``saliency``
        (smoothed tophat), ``noise`` (local mean tophat), ``vessel`` (Weber contrast of
        elongated dark structures), ``texture`` (local RMS of fine detail, Weber units);
        and ``fov`` (bool).
    window
        The image-px box ``(x0, y0, x1, y1)`` whose values are exact (equal to the
        whole-image computation); the rest is context.
    """

    x0: int
    y0: int
    factor: int
    um_per_px: float
    maps: dict[str, np.ndarray] = field(repr=False)
    window: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def work_um_per_px(self) -> float:
        """float: size of one working pixel in µm."""
        return self.factor * self.um_per_px

    def to_work(self, x: float, y: float) -> tuple[float, float]:
        """Map image px to working-grid px (pixel centres map to pixel centres)."""
        return ((x - self.x0 + 0.5) / self.factor - 0.5, (y - self.y0 + 0.5) / self.factor - 0.5)

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        """Map working-grid px to image px."""
        return ((u + 0.5) * self.factor - 0.5 + self.x0, (v + 0.5) * self.factor - 0.5 + self.y0)


def work_factor(um_per_px: float, params: SaliencyParams = SaliencyParams()) -> int:
    """Return the integer block-averaging factor for an image of ``um_per_px``."""
    if um_per_px <= 0:
        raise ValueError("um_per_px must be positive.")
    return max(1, int(round(params.work_um_per_px / um_per_px)))


def _odd(n: float) -> int:
    n = max(1, int(round(n)))
    return n if n % 2 else n + 1


def _sizes(work_um: float, p: SaliencyParams) -> dict[str, int | float]:
    return {
        "line": _odd(p.line_um / work_um),
        "background": max(3, _odd(p.background_um / work_um)),
        "smooth": max(0.5, p.smooth_um / work_um),
        "noise": max(1.0, p.noise_um / work_um),
        "vessel": _odd(p.vessel_um / work_um),
        "fill": _odd(p.fill_um / work_um),
    }


def margin_px(um_per_px: float, params: SaliencyParams = SaliencyParams()) -> int:
    """Context in image px a window needs so its inside equals the whole-image result.

    It adds the radii of the chained filters (fill → closing/median → smoothing/noise) plus
    room for the candidate features (:mod:`appliance.glance.candidates` looks up to one line
    length around a peak).
    """
    f = work_factor(um_per_px, params)
    s = _sizes(f * um_per_px, params)
    blur = max(_odd(8 * s["smooth"] + 1), _odd(6 * s["noise"] + 1)) // 2
    chain = s["fill"] // 2 + max(s["line"], s["background"] // 2, s["vessel"]) + blur \
        + s["line"] + 4
    return int(math.ceil(chain * f + f))


@functools.lru_cache(maxsize=8)
def _lines(length: int) -> tuple[np.ndarray, ...]:
    """Linear structuring elements of ``length`` px in :data:`N_ORIENTATIONS` orientations.

    Cached: building them cost ~4 ms, paid on every fixation's window.
    """
    c = length // 2
    out = []
    for i in range(N_ORIENTATIONS):
        th = math.pi * i / N_ORIENTATIONS
        k = np.zeros((length, length), np.uint8)
        for t in np.linspace(-c, c, 4 * length):
            k[int(round(c + t * math.sin(th))), int(round(c + t * math.cos(th)))] = 1
        k.flags.writeable = False
        out.append(k)
    return tuple(out)


def _block_mean_numpy(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape
    H, W = -(-h // f), -(-w // f)
    pad = np.zeros((H * f, W * f), np.float32)
    cnt = np.zeros((H * f, W * f), np.float32)
    pad[:h, :w] = a
    cnt[:h, :w] = 1.0
    s = pad.reshape(H, f, W, f).sum(axis=(1, 3))
    n = cnt.reshape(H, f, W, f).sum(axis=(1, 3))
    return (s / n).astype(np.float32)


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Average ``f × f`` blocks anchored at (0, 0); a partial last block averages what it has.

    The whole blocks go through OpenCV's area resize (an exact block mean at an integer
    factor, ~10x faster than numpy's reshape-and-sum, which was a third of a fixation's
    saliency time); only the partial last row and column of blocks use numpy.
    """
    a = np.asarray(a, dtype=np.float32)
    if f == 1:
        return a
    h, w = a.shape
    hf, wf = h // f, w // f
    out = np.empty((-(-h // f), -(-w // f)), np.float32)
    if hf and wf:
        out[:hf, :wf] = cv2.resize(np.ascontiguousarray(a[:hf * f, :wf * f]), (wf, hf),
                                   interpolation=cv2.INTER_AREA)
    if hf * f < h:
        out[hf:, :] = _block_mean_numpy(a[hf * f:, :], f)
    if wf * f < w and hf:
        out[:hf, wf:] = _block_mean_numpy(a[:hf * f, wf * f:], f)
    return out


def compute_saliency(rgb: np.ndarray, fov_mask: np.ndarray, um_per_px: float,
                     window: Optional[tuple[int, int, int, int]] = None,
                     params: SaliencyParams = SaliencyParams()) -> SaliencyMap:
    """Compute the MA-likeness map over the whole image or around a window.

    Parameters
    ----------
    rgb
        H×W×3 uint8 RGB photograph (whole image; only the needed part is read).
    fov_mask
        H×W bool field of view of the whole image.
    um_per_px
        Image pixel size in µm (:func:`appliance.imaging.scale.um_per_px`).
    window
        ``(x0, y0, x1, y1)`` in image px (gaze mode), or None for the whole image.
    params
        Physical sizes.

    Returns
    -------
    SaliencyMap
        For a window, the maps cover the window plus :func:`margin_px` of context snapped
        to the working grid; inside the window they equal the whole-image maps.

    Raises
    ------
    ValueError
        If shapes disagree or the window is empty.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError("Expected an H×W×3 RGB photograph.")
    h, w = rgb.shape[:2]
    if fov_mask.shape != (h, w):
        raise ValueError("The FOV mask must have the photograph's height and width.")
    f = work_factor(um_per_px, params)
    if window is None:
        win = (0, 0, w, h)
        rx0, ry0, rx1, ry1 = 0, 0, w, h
    else:
        wx0, wy0, wx1, wy1 = (int(math.floor(window[0])), int(math.floor(window[1])),
                              int(math.ceil(window[2])), int(math.ceil(window[3])))
        wx0, wy0, wx1, wy1 = max(0, wx0), max(0, wy0), min(w, wx1), min(h, wy1)
        if wx1 <= wx0 or wy1 <= wy0:
            raise ValueError("The window lies outside the photograph or is empty.")
        win = (wx0, wy0, wx1, wy1)
        m = margin_px(um_per_px, params)
        rx0 = max(0, (wx0 - m) // f * f)
        ry0 = max(0, (wy0 - m) // f * f)
        rx1 = min(w, -(-(wx1 + m) // f) * f)
        ry1 = min(h, -(-(wy1 + m) // f) * f)
        if rx1 < w:  # keep blocks whole, as the whole-image grid has them
            rx1 = rx0 + (rx1 - rx0) // f * f
        if ry1 < h:
            ry1 = ry0 + (ry1 - ry0) // f * f
    crop = rgb[ry0:ry1, rx0:rx1]
    maps = _compute(crop, fov_mask[ry0:ry1, rx0:rx1], f, f * um_per_px, params)
    return SaliencyMap(x0=rx0, y0=ry0, factor=f, um_per_px=um_per_px, maps=maps, window=win)


def _compute(crop: np.ndarray, fov: np.ndarray, f: int, work_um: float,
             p: SaliencyParams) -> dict[str, np.ndarray]:
    s = _sizes(work_um, p)
    green = _block_mean(crop[:, :, 1], f)
    red = _block_mean(crop[:, :, 0], f)
    inside = _block_mean(fov.astype(np.float32), f) > 0.5
    # Fill the margin with the local FOV average so the aperture edge is not a dark structure.
    g = fill_outside(green, inside, s["fill"])
    # Background level: median over a window much larger than any MA or vessel width.
    background = normalise_background(g, s["background"])
    # Linear top-hat: min over orientations of line closings removes MAs but keeps vessels.
    closed = None
    for kern in _lines(s["line"]):
        c = cv2.morphologyEx(g, cv2.MORPH_CLOSE, kern, borderType=cv2.BORDER_REFLECT)
        closed = c if closed is None else np.minimum(closed, c)
    tophat = np.maximum(closed - g, 0.0) / background
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (s["vessel"], s["vessel"]))
    disc_closed = cv2.morphologyEx(g, cv2.MORPH_CLOSE, disc, borderType=cv2.BORDER_REFLECT)
    vessel = np.maximum(disc_closed - closed, 0.0) / background
    ks = _odd(8 * s["smooth"] + 1)
    saliency = cv2.GaussianBlur(tophat, (ks, ks), s["smooth"], borderType=cv2.BORDER_REFLECT)
    vessel = cv2.GaussianBlur(vessel, (ks, ks), s["smooth"], borderType=cv2.BORDER_REFLECT)
    kn = _odd(6 * s["noise"] + 1)  # 3-sigma support keeps the gaze-window margin small
    noise = cv2.GaussianBlur(tophat, (kn, kn), s["noise"], borderType=cv2.BORDER_REFLECT)
    noise = np.maximum(noise, 1e-4)
    # Texture: local RMS of the fine detail (Weber units), the background a dot must beat.
    kf = _odd(8 * s["smooth"] + 1)
    detail = (g - cv2.GaussianBlur(g, (kf, kf), s["smooth"], borderType=cv2.BORDER_REFLECT)) / background
    texture = np.sqrt(cv2.GaussianBlur(detail * detail, (kn, kn), s["noise"], borderType=cv2.BORDER_REFLECT))
    texture = np.maximum(texture, 1e-4)
    saliency = np.where(inside, saliency, 0.0).astype(np.float32)
    return {"green": g, "red": red, "background": background, "tophat": tophat.astype(np.float32),
            "saliency": saliency, "noise": noise.astype(np.float32),
            "vessel": vessel.astype(np.float32), "texture": texture.astype(np.float32),
            "fov": inside}
