"""Duration-weighted Gaussian gaze heat map, sigma in degrees, updated per fixation.

Step 1 of the GlanceSeg method: each fixation adds a Gaussian of ``sigma_deg`` (about
1 deg, the size of the fovea and of the tracker's error) converted to image px with the
fixation's own ``px_per_deg``, so a fixation made while zoomed in adds a proportionally
narrower blob.

Units: the Gaussian is *not* area-normalised; its peak is the fixation's duration in
seconds. The heat at a point is therefore "seconds of dwell, discounted by distance",
which keeps a threshold meaningful whatever the zoom (see :mod:`appliance.gaze.roi`).
Heat only ever grows, so regions above a threshold only grow: incremental processing of
new ground and a batch run over the same fixations agree.

The map is held at reduced resolution (``cell_px`` image px per heat pixel, 8 by
default: a 4288x2848 photograph gives a 536x356 float64 map, 1.5 MB), because sigma is
about 100 image px at the fitted view and a finer map would only cost memory.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from appliance.gaze.fixations import Fixation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeatmapParams:
    """Heat-map settings.

    Attributes
    ----------
    sigma_deg
        Gaussian sigma in degrees of visual angle (the paper's ~1 deg).
    cell_px
        Image px per heat-map pixel.
    truncate_sigma
        The Gaussian is added out to this many sigmas (3: 99.7 % of it; beyond, its
        value is under 1.2 % of the peak).
    """

    sigma_deg: float = 1.0
    cell_px: int = 8
    truncate_sigma: float = 3.0

    def __post_init__(self) -> None:
        if not (self.sigma_deg > 0 and self.cell_px >= 1 and self.truncate_sigma > 0):
            raise ValueError("Heat-map sigma, cell size and truncation must be positive.")


@dataclass(frozen=True)
class HeatRegion:
    """The block of heat-map pixels one update touched: rows ``r0:r1``, cols ``c0:c1``."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def empty(self) -> bool:
        """bool: True when the update fell entirely outside the image."""
        return self.r1 <= self.r0 or self.c1 <= self.c0


class GazeHeatmap:
    """The accumulated heat map of one photograph.

    Parameters
    ----------
    width, height
        Photograph size in image px.
    params
        Sigma, resolution and truncation.
    """

    def __init__(self, width: int, height: int, params: HeatmapParams = HeatmapParams()) -> None:
        if width <= 0 or height <= 0:
            raise ValueError("Image width and height must be positive.")
        self.width = int(width)
        self.height = int(height)
        self.params = params
        cell = params.cell_px
        self.heat = np.zeros((math.ceil(height / cell), math.ceil(width / cell)), dtype=np.float64)
        self.fixations_added = 0

    @property
    def shape(self) -> tuple[int, int]:
        """tuple[int, int]: ``(rows, cols)`` of the reduced map."""
        return self.heat.shape  # type: ignore[return-value]

    def sigma_px(self, px_per_deg: float) -> float:
        """Return sigma in image px for a fixation made at ``px_per_deg``."""
        return self.params.sigma_deg * px_per_deg

    def add(self, x: float, y: float, px_per_deg: float, weight: float) -> HeatRegion:
        """Add a Gaussian centred on image point ``(x, y)`` with peak ``weight``.

        Returns
        -------
        HeatRegion
            The heat-map pixels changed (empty when nothing was added).

        Raises
        ------
        ValueError
            If a value is not finite or ``px_per_deg`` is not positive.
        """
        if not all(math.isfinite(v) for v in (x, y, px_per_deg, weight)) or px_per_deg <= 0:
            raise ValueError("Heat-map updates need a finite position, weight and positive px_per_deg.")
        cell = self.params.cell_px
        sigma = self.sigma_px(px_per_deg)
        # Capped at the image's extent, which it cannot usefully pass: a px_per_deg near the
        # float limit (a unit slip in a gaze CSV) made the reach infinite and the cell bounds
        # below an OverflowError that stopped the whole stream.
        reach = min(self.params.truncate_sigma * sigma, float(self.width + self.height))
        rows, cols = self.shape
        c0 = max(0, int(math.floor((x - reach) / cell)))
        c1 = min(cols, int(math.ceil((x + reach) / cell)) + 1)
        r0 = max(0, int(math.floor((y - reach) / cell)))
        r1 = min(rows, int(math.ceil((y + reach) / cell)) + 1)
        region = HeatRegion(r0, max(r0, r1), c0, max(c0, c1))
        if region.empty or weight <= 0:
            return HeatRegion(r0, r0, c0, c0)
        xs = (np.arange(c0, c1) + 0.5) * cell
        ys = (np.arange(r0, r1) + 0.5) * cell
        gx = np.exp(-0.5 * ((xs - x) / sigma) ** 2)
        gy = np.exp(-0.5 * ((ys - y) / sigma) ** 2)
        self.heat[r0:r1, c0:c1] += weight * np.outer(gy, gx)
        return region

    def add_fixation(self, fixation: Fixation) -> HeatRegion:
        """Add one fixation, weighted by its duration in seconds."""
        region = self.add(fixation.x, fixation.y, fixation.px_per_deg, fixation.duration_s)
        self.fixations_added += 1
        return region

    def value_at(self, x: float, y: float) -> float:
        """Return the heat (dwell seconds) at image point ``(x, y)``; 0 off the image."""
        if not (0 <= x < self.width and 0 <= y < self.height):
            return 0.0
        cell = self.params.cell_px
        return float(self.heat[int(y // cell), int(x // cell)])

    def cell_centers(self, region: Optional[HeatRegion] = None) -> tuple[np.ndarray, np.ndarray]:
        """Return the image-px centres ``(xs, ys)`` of the heat pixels' columns and rows
        (of ``region`` or the whole map), clipped to the image."""
        rows, cols = self.shape
        region = region or HeatRegion(0, rows, 0, cols)
        cell = self.params.cell_px
        xs = np.minimum((np.arange(region.c0, region.c1) + 0.5) * cell, self.width - 0.5)
        ys = np.minimum((np.arange(region.r0, region.r1) + 0.5) * cell, self.height - 0.5)
        return xs, ys

    def to_image(self) -> np.ndarray:
        """Return the heat map at full image size (H x W float32), for display."""
        import cv2  # imported here: only the UI overlay needs it

        return cv2.resize(self.heat.astype(np.float32), (self.width, self.height),
                          interpolation=cv2.INTER_LINEAR)
