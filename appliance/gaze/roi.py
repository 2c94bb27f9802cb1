"""Regions of interest where the heat map is high, and the new ground each fixation adds.

Step 2 of the method. A heat-map pixel belongs to the glanced region when its heat
(dwell seconds, see :mod:`appliance.gaze.heatmap`) reaches ``threshold_s``. The
default, 0.05 s, makes a fixation of duration ``d`` cover a disc of radius
``sigma * sqrt(2 ln(d / 0.05 s))``: 1.8 sigma (1.8 deg at the default sigma) for a
typical 250 ms fixation and 2 sigma for a 400 ms dwell, wide enough to hold the lesion
despite the Neon's 1.3-1.8 deg accuracy, while a 60 ms glance adds almost nothing.

The threshold is absolute, not relative to the map's maximum: heat only grows, so the
glanced region only grows, and "new ground" is well defined. New ground is counted in
cells of a fixed grid anchored at (0, 0) (:class:`~appliance.imaging.tiling.TileGrid`
with no overlap, ``cell_px`` = 64 by default), so a live stream and a batch run over
the same fixations cover exactly the same cells, and the pipeline runs saliency only on
cells it has not processed yet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from appliance.gaze.fixations import Fixation
from appliance.gaze.heatmap import GazeHeatmap, HeatmapParams, HeatRegion
from appliance.imaging.tiling import TileGrid

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Roi:
    """One connected glanced region.

    Attributes
    ----------
    x0, y0, x1, y1
        Bounding box in image px (``x1``, ``y1`` exclusive), clipped to the image.
    peak_s
        Highest heat inside, dwell seconds.
    area_px
        Glanced area in image px (heat pixels times ``cell_px**2``, clipped).
    """

    x0: int
    y0: int
    x1: int
    y1: int
    peak_s: float
    area_px: int

    @property
    def box(self) -> Box:
        """tuple[int, int, int, int]: ``(x0, y0, x1, y1)``."""
        return (self.x0, self.y0, self.x1, self.y1)


@dataclass(frozen=True)
class NewGround:
    """What one fixation added to the glanced region.

    Attributes
    ----------
    fixation
        The fixation.
    cells
        ``(row, col)`` keys of grid cells covered for the first time, sorted.
    boxes
        Their boxes in image px ``(x0, y0, x1, y1)``, clipped to the image, same order.
    """

    fixation: Fixation
    cells: tuple[tuple[int, int], ...]
    boxes: tuple[Box, ...]

    @property
    def empty(self) -> bool:
        """bool: True when the fixation covered nothing new."""
        return not self.cells


class RoiTracker:
    """Heat map plus glanced-region bookkeeping for one photograph.

    Parameters
    ----------
    width, height
        Photograph size in image px.
    heatmap_params
        Sigma (deg), heat-map resolution.
    threshold_s
        Heat (dwell seconds) from which a point counts as glanced.
    cell_px
        Side of the fixed new-ground cells in image px.
    """

    def __init__(self, width: int, height: int, heatmap_params: HeatmapParams = HeatmapParams(),
                 threshold_s: float = 0.05, cell_px: int = 64) -> None:
        if not threshold_s > 0:
            raise ValueError("The ROI threshold must be positive.")
        self.heatmap = GazeHeatmap(width, height, heatmap_params)
        self.threshold_s = float(threshold_s)
        self.grid = TileGrid(width, height, size=int(cell_px), overlap=0)
        self._covered: set[tuple[int, int]] = set()

    @property
    def covered_cells(self) -> frozenset[tuple[int, int]]:
        """frozenset[tuple[int, int]]: every cell glanced so far."""
        return frozenset(self._covered)

    def cell_box(self, row: int, col: int) -> Box:
        """Return cell ``(row, col)`` as an image-px box clipped to the image."""
        tile = self.grid.tile(row, col)
        return (tile.x0, tile.y0, min(tile.x0 + tile.size, self.grid.width),
                min(tile.y0 + tile.size, self.grid.height))

    def _cells_in(self, region: HeatRegion) -> set[tuple[int, int]]:
        if region.empty:
            return set()
        hot = self.heatmap.heat[region.r0:region.r1, region.c0:region.c1] >= self.threshold_s
        if not hot.any():
            return set()
        xs, ys = self.heatmap.cell_centers(region)
        step = self.grid.stride
        # Heat rows / cols -> grid rows / cols, then the distinct (row, col) pairs that hold
        # at least one hot heat pixel (numpy, not a Python loop over thousands of pixels).
        cell_rows = np.minimum((ys // step).astype(np.int64), self.grid.rows - 1)
        cell_cols = np.minimum((xs // step).astype(np.int64), self.grid.cols - 1)
        ii, jj = np.nonzero(hot)
        keys = np.unique(cell_rows[ii] * self.grid.cols + cell_cols[jj])
        return {(int(k // self.grid.cols), int(k % self.grid.cols)) for k in keys}

    def add_fixation(self, fixation: Fixation) -> NewGround:
        """Add a fixation to the heat map and return the cells it newly covered."""
        region = self.heatmap.add_fixation(fixation)
        new = sorted(self._cells_in(region) - self._covered)
        self._covered.update(new)
        if new:
            logger.debug("fixation %d covered %d new cells", fixation.index, len(new))
        return NewGround(fixation, tuple(new), tuple(self.cell_box(r, c) for r, c in new))

    def glanced_mask(self) -> np.ndarray:
        """Return the reduced-resolution boolean map of glanced heat pixels."""
        return self.heatmap.heat >= self.threshold_s

    def contains(self, x: float, y: float) -> bool:
        """bool: True when image point ``(x, y)`` is in the glanced region."""
        return self.heatmap.value_at(x, y) >= self.threshold_s

    def rois(self, min_area_px: Optional[int] = None) -> list[Roi]:
        """Return the connected glanced regions (8-connectivity), largest first.

        Parameters
        ----------
        min_area_px
            Drop regions smaller than this (image px); None keeps all.
        """
        import cv2  # imported here: connected components only

        mask = self.glanced_mask().astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        cell = self.heatmap.params.cell_px
        w, h = self.heatmap.width, self.heatmap.height
        out = []
        for label in range(1, n):
            cx, cy, cw, ch, area = (int(v) for v in stats[label])
            box = (cx * cell, cy * cell, min(w, (cx + cw) * cell), min(h, (cy + ch) * cell))
            area_px = area * cell * cell
            if min_area_px is not None and area_px < min_area_px:
                continue
            peak = float(self.heatmap.heat[labels == label].max())
            out.append(Roi(*box, peak_s=peak, area_px=area_px))
        out.sort(key=lambda r: (-r.area_px, r.y0, r.x0))
        return out
