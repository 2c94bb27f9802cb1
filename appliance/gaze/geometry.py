"""Display geometry and the viewer's screen <-> image transform.

Gaze accuracy is an angle (the Neon is good to about 1.3-1.8 deg), so every size that
the gaze map uses (the I-DT dispersion, the heat-map sigma) is set in degrees of visual
angle and converted to pixels here. Two steps:

1. the reading screen (physical size, resolution, viewing distance) gives *screen* px per
   degree (:func:`screen_px_per_deg`);
2. the viewer's zoom and pan (:class:`ViewTransform`) give *image* px per screen px, hence
   image px per degree. Zooming in by 2 shows each image px twice as large, so one degree
   covers half as many image px: the gaze map gets proportionally finer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Optional, Union

import numpy as np

from appliance.config import DisplayConfig

logger = logging.getLogger(__name__)

ArrayLike = Union[float, np.ndarray]


def screen_px_per_deg(display: DisplayConfig) -> float:
    """Return screen px per degree of visual angle at the centre of the screen.

    One degree centred on the line of sight spans ``2 d tan(0.5 deg)`` mm at viewing
    distance ``d``; the screen's pixel pitch (the mean of both axes, which differ only
    on non-square pixels) turns that into px.

    Parameters
    ----------
    display
        Screen size in mm and px and the viewing distance in mm.

    Returns
    -------
    float
        Screen px per degree (about 54 for a 15.6-inch 1080p screen at 55 cm).

    Raises
    ------
    ValueError
        If a size or the viewing distance is not positive.
    """
    values = (display.width_mm, display.height_mm, display.width_px, display.height_px,
              display.viewing_distance_mm)
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError("Display sizes and the viewing distance must be positive numbers.")
    px_per_mm = 0.5 * (display.width_px / display.width_mm + display.height_px / display.height_mm)
    mm_per_deg = 2.0 * display.viewing_distance_mm * math.tan(math.radians(0.5))
    return px_per_mm * mm_per_deg


@dataclass(frozen=True)
class ViewTransform:
    """How the photograph is shown on the screen at one moment.

    ``screen = (image - center) * scale + viewport_center + offset`` with
    ``scale = fit_scale * zoom``: zoom 1 fits the whole photograph in the viewport
    (letterboxed, aspect kept); ``center_x``, ``center_y`` are the image px shown at the
    centre of the viewport (the pan), the image centre by default. ``offset_x``,
    ``offset_y`` place the viewport on the screen (a toolbar above it): screen px are then
    the whole screen's, which is what a screen-mapped eye tracker and a pointer report.

    Parameters
    ----------
    image_width, image_height
        Photograph size in image px.
    screen_width, screen_height
        Viewport size in screen px.
    zoom
        Magnification relative to the fitted view (> 0).
    center_x, center_y
        Image px at the viewport centre; None means the image centre.
    offset_x, offset_y
        Screen px of the viewport's top-left corner (0, 0: the viewport is the screen).
    """

    image_width: int
    image_height: int
    screen_width: int
    screen_height: int
    zoom: float = 1.0
    center_x: Optional[float] = None
    center_y: Optional[float] = None
    offset_x: float = 0.0
    offset_y: float = 0.0

    def __post_init__(self) -> None:
        if min(self.image_width, self.image_height, self.screen_width, self.screen_height) <= 0:
            raise ValueError("Image and screen sizes must be positive.")
        if not (math.isfinite(self.zoom) and self.zoom > 0):
            raise ValueError(f"Zoom must be a positive number, not {self.zoom!r}.")
        if not (math.isfinite(self.offset_x) and math.isfinite(self.offset_y)):
            raise ValueError("The viewport offset must be finite.")
        if self.center_x is None:
            object.__setattr__(self, "center_x", self.image_width / 2.0)
        if self.center_y is None:
            object.__setattr__(self, "center_y", self.image_height / 2.0)

    @classmethod
    def fitted(cls, image_width: int, image_height: int, display: DisplayConfig) -> "ViewTransform":
        """Return the default view: the whole photograph fitted to the configured screen."""
        return cls(image_width, image_height, display.width_px, display.height_px)

    @property
    def fit_scale(self) -> float:
        """float: screen px per image px at zoom 1 (the photograph fitted, aspect kept)."""
        return min(self.screen_width / self.image_width, self.screen_height / self.image_height)

    @property
    def scale(self) -> float:
        """float: screen px per image px at the current zoom."""
        return self.fit_scale * self.zoom

    def with_zoom(self, zoom: float, anchor_screen: Optional[tuple[float, float]] = None) -> "ViewTransform":
        """Return the view zoomed to ``zoom``, keeping the image point under ``anchor_screen``
        (screen px; the screen centre by default) where it is, as pinch-zoom does."""
        if anchor_screen is None:
            return replace(self, zoom=zoom)
        ax, ay = anchor_screen
        ix, iy = self.screen_to_image(ax, ay)
        new = replace(self, zoom=zoom)
        new_scale = new.scale
        cx = ix - (ax - self.offset_x - self.screen_width / 2.0) / new_scale
        cy = iy - (ay - self.offset_y - self.screen_height / 2.0) / new_scale
        return replace(new, center_x=float(cx), center_y=float(cy))

    def with_pan(self, center_x: float, center_y: float) -> "ViewTransform":
        """Return the view with image point ``(center_x, center_y)`` at the screen centre."""
        return replace(self, center_x=float(center_x), center_y=float(center_y))

    def screen_to_image(self, x: ArrayLike, y: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        """Map screen px (the viewport's top-left at the offset) to image px; scalars or arrays."""
        s = self.scale
        return ((x - self.offset_x - self.screen_width / 2.0) / s + self.center_x,
                (y - self.offset_y - self.screen_height / 2.0) / s + self.center_y)

    def image_to_screen(self, x: ArrayLike, y: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        """Map image px to screen px; the inverse of :meth:`screen_to_image`."""
        s = self.scale
        return ((x - self.center_x) * s + self.screen_width / 2.0 + self.offset_x,
                (y - self.center_y) * s + self.screen_height / 2.0 + self.offset_y)

    def on_screen(self, x_screen: float, y_screen: float) -> bool:
        """bool: True when a screen point lies inside the viewport."""
        x, y = x_screen - self.offset_x, y_screen - self.offset_y
        return 0.0 <= x < self.screen_width and 0.0 <= y < self.screen_height

    def image_px_per_deg(self, screen_px_per_degree: float) -> float:
        """Return image px per degree at the current zoom.

        Zooming in by a factor k divides it by k: the same degree of gaze error covers
        fewer image px, so a clinician who zooms in gets a finer gaze map.
        """
        return screen_px_per_degree / self.scale


def default_image_px_per_deg(image_width: int, image_height: int, display: DisplayConfig) -> float:
    """Return image px per degree with the photograph fitted to the configured screen.

    The fallback the gaze CSV contract names for a missing ``px_per_deg`` column.
    """
    view = ViewTransform.fitted(image_width, image_height, display)
    return view.image_px_per_deg(screen_px_per_deg(display))
