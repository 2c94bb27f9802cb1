"""Green-channel illumination and contrast normalisation.

Microaneurysms and vessels show best in the green channel (haemoglobin absorbs green;
red is washed out, blue is noisy). Fundus illumination falls off towards the rim and
varies between photographs, so raw grey levels mean nothing on their own; dividing by a
local background (a median over a window much larger than any lesion) turns them into a
Weber contrast: 1.0 is background, 0.8 is 20 % darker than its surroundings, on any camera.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

logger = logging.getLogger(__name__)


def green_channel(rgb: np.ndarray) -> np.ndarray:
    """Return the green channel of an H×W×3 RGB image as float32 (0..255).

    Raises
    ------
    ValueError
        If the array is not H×W×3.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError("Expected an H×W×3 RGB image.")
    return rgb[:, :, 1].astype(np.float32)


def fill_outside(image: np.ndarray, mask: np.ndarray, size_px: int) -> np.ndarray:
    """Replace pixels outside ``mask`` by the local mean of the pixels inside.

    The black margin around the aperture would otherwise read as a huge dark structure
    and its edge as a steep contrast. ``size_px`` is the averaging box; pixels farther than
    that from the FOV get 0.
    """
    size_px = max(3, int(size_px) | 1)
    m = np.asarray(mask, np.float32)
    img = np.asarray(image, np.float32)
    num = cv2.boxFilter(img * m, -1, (size_px, size_px), normalize=False, borderType=cv2.BORDER_REFLECT)
    den = cv2.boxFilter(m, -1, (size_px, size_px), normalize=False, borderType=cv2.BORDER_REFLECT)
    fill = np.where(den > 0.5, num / np.maximum(den, 1e-6), 0.0)
    return np.where(m > 0.5, img, fill).astype(np.float32)


def background(green: np.ndarray, size_px: int) -> np.ndarray:
    """Local background level: median over a ``size_px`` window (odd, capped at 255).

    The median ignores lesions and vessels narrower than half the window.
    """
    size_px = int(min(255, max(3, int(size_px) | 1)))
    g8 = np.clip(np.rint(green), 0, 255).astype(np.uint8)
    return np.maximum(cv2.medianBlur(g8, size_px).astype(np.float32), 1.0)


def normalised_green(rgb: np.ndarray, fov_mask: np.ndarray, um_per_px: float,
                     work_um_per_px: float = 20.0, background_um: float = 500.0
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """Green channel divided by its local background, on a coarse physical grid.

    Parameters
    ----------
    rgb
        H×W×3 uint8 RGB photograph.
    fov_mask
        H×W bool field of view.
    um_per_px
        Image pixel size in µm.
    work_um_per_px
        Target working pixel size (the image is area-averaged by an integer factor).
    background_um
        Median window for the background.

    Returns
    -------
    (normalised, fov, factor)
        Float32 Weber image (1.0 = background, 0 outside the FOV), the FOV on the same
        grid, and the integer downsampling factor.
    """
    factor = max(1, int(round(work_um_per_px / um_per_px)))
    g = green_channel(rgb)
    h, w = g.shape
    size = (max(1, w // factor), max(1, h // factor))
    g = cv2.resize(g, size, interpolation=cv2.INTER_AREA)
    fov = cv2.resize(np.asarray(fov_mask, np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    work_um = factor * um_per_px
    g = fill_outside(g, fov, int(round(background_um / work_um)))
    bg = background(g, int(round(background_um / work_um)))
    return np.where(fov, g / bg, 0.0).astype(np.float32), fov, factor
