"""Pixel scale of a fundus photograph, so that lesion sizes are set in micrometres.

A fundus camera's field angle (45° or 50° for most, 30° for narrow ones) spans the
diameter of its circular field of view. In the Gullstrand–Le Grand model eye one degree of
visual angle covers about 0.29 mm of retina near the posterior pole (291 µm/deg is the
figure commonly used in fundus photography; 0.288 in Drasdo & Fowler 1974), so

    um_per_px = fov_deg × 290 µm/deg / FOV diameter in px.

For IDRiD (Kowa VX-10α, 50°, FOV ≈ 3420 px across) that is ≈ 4.2 µm/px, so a 10–125 µm
MA is ≈ 2–30 px across, matching the annotations. The figure ignores each eye's axial
length (±10 %) and the camera's own distortion, which the size rules tolerate.
"""

from __future__ import annotations

import logging

from appliance.errors import ConfigError

logger = logging.getLogger(__name__)

#: Retinal distance per degree of visual angle near the posterior pole (µm/deg).
UM_PER_DEG: float = 290.0
#: Field angles a fundus camera can have, in degrees (narrow 20-30°, ultra-widefield to 200°).
FOV_DEG_RANGE: tuple[float, float] = (5.0, 200.0)
#: Retinal pixel sizes a fundus photograph can have, in µm (a 24 MP sensor at 30° is ~2, a
#: thumbnail ~100).
UM_PER_PX_RANGE: tuple[float, float] = (0.5, 200.0)


def um_per_px(diameter_px: float, fov_deg: float, um_per_deg: float = UM_PER_DEG) -> float:
    """Return the retinal size of one image pixel in micrometres.

    Parameters
    ----------
    diameter_px
        FOV diameter in image px (:attr:`FieldOfView.diameter_px`).
    fov_deg
        The camera's field angle in degrees (config ``imaging.fov_deg``, or DICOM).
    um_per_deg
        Retinal µm per degree of visual angle.

    Raises
    ------
    ValueError
        If a value is not positive or the angle is implausible for a fundus camera.
    """
    if diameter_px <= 0:
        raise ValueError("The FOV diameter must be positive.")
    if not FOV_DEG_RANGE[0] <= fov_deg <= FOV_DEG_RANGE[1]:
        raise ValueError(f"A field angle of {fov_deg}° is implausible for a fundus camera.")
    if um_per_deg <= 0:
        raise ValueError("Micrometres per degree must be positive.")
    return fov_deg * um_per_deg / float(diameter_px)


def photograph_scale(diameter_px: float, fov_deg: float, configured_um_per_px: float = 0.0) -> float:
    """Return the pixel size of a photograph: the configured one, else from its FOV.

    ``configured_um_per_px`` (``[imaging] um_per_px``) serves cameras whose photographs
    are cropped inside the aperture, where no FOV diameter can be measured; 0 means unset.

    Raises
    ------
    ConfigError
        If the configured size is negative or the field angle implausible: settings a
        technician must correct, not a fault of the photograph.
    """
    if configured_um_per_px < 0:
        raise ConfigError(f"[imaging] um_per_px must be positive, or 0 to derive it; got {configured_um_per_px}.")
    if configured_um_per_px:
        return float(configured_um_per_px)
    try:
        return um_per_px(diameter_px, fov_deg)
    except ValueError as exc:
        raise ConfigError(f"{exc} Check [imaging] fov_deg.") from exc


def px_from_um(length_um: float, scale_um_per_px: float) -> float:
    """Convert a retinal length in µm to image px at ``scale_um_per_px``."""
    if scale_um_per_px <= 0:
        raise ValueError("The pixel scale must be positive.")
    return length_um / scale_um_per_px
