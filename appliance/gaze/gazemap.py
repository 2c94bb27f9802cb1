"""Samples in, new ground out: the fixation detector and the ROI tracker of one photograph.

The pipeline's gaze front end in one object, so a live stream and a batch run use the
same code path: feed samples (or call :meth:`GazeMap.tick` when the source is quiet),
receive one :class:`~appliance.gaze.roi.NewGround` per fixation, in order.
"""

from __future__ import annotations

import logging
import math
from typing import Iterable, Optional

from appliance.config import Config
from appliance.gaze.base import GazeSample
from appliance.gaze.fixations import Fixation, FixationDetector, FixationParams
from appliance.gaze.geometry import default_image_px_per_deg
from appliance.gaze.heatmap import HeatmapParams
from appliance.gaze.roi import NewGround, Roi, RoiTracker

logger = logging.getLogger(__name__)


class GazeMap:
    """Fixations, heat map and glanced cells of one photograph.

    Parameters
    ----------
    width, height
        Photograph size in image px.
    default_px_per_deg
        Image px per degree for samples without one (the gaze CSV's ``--px-per-deg``
        option or the fitted display geometry).
    fixation_params, heatmap_params, threshold_s, cell_px
        See :mod:`appliance.gaze.fixations` and :mod:`appliance.gaze.roi`.
    """

    def __init__(self, width: int, height: int, default_px_per_deg: float = math.nan,
                 fixation_params: FixationParams = FixationParams(),
                 heatmap_params: HeatmapParams = HeatmapParams(),
                 threshold_s: float = 0.05, cell_px: int = 64) -> None:
        self.detector = FixationDetector(fixation_params, default_px_per_deg, (width, height))
        self.roi = RoiTracker(width, height, heatmap_params, threshold_s, cell_px)
        self.fixations: list[Fixation] = []

    @classmethod
    def from_config(cls, config: Config, width: int, height: int,
                    px_per_deg: Optional[float] = None) -> "GazeMap":
        """Build with the ``[gaze]`` settings; ``px_per_deg`` None means the fitted view."""
        from appliance.gaze.sources import fixation_params, heatmap_params

        default = px_per_deg if px_per_deg is not None else default_image_px_per_deg(width, height, config.display)
        return cls(width, height, default, fixation_params(config), heatmap_params(config),
                   config.gaze.roi_threshold_s, config.gaze.roi_cell_px)

    @property
    def counters(self) -> dict[str, int]:
        """dict[str, int]: the detector's sample counters (see :mod:`appliance.gaze.fixations`)."""
        return self.detector.counters

    def _ground(self, fixations: list[Fixation]) -> list[NewGround]:
        self.fixations += fixations
        return [self.roi.add_fixation(f) for f in fixations]

    def feed(self, sample: GazeSample) -> list[NewGround]:
        """Take one sample; return the new ground of each fixation it ended."""
        return self._ground(self.detector.feed(sample))

    def feed_many(self, samples: Iterable[GazeSample]) -> list[NewGround]:
        """Take many samples; return the new ground of each fixation they ended."""
        return self._ground(self.detector.feed_many(samples))

    def tick(self, now_ns: int) -> list[NewGround]:
        """No sample arrived by ``now_ns``: end a fixation whose gaze has gone quiet."""
        return self._ground(self.detector.tick(now_ns))

    def flush(self) -> list[NewGround]:
        """End of the stream: close the last fixation."""
        return self._ground(self.detector.flush())

    def rois(self) -> list[Roi]:
        """Return the glanced regions so far, largest first."""
        return self.roi.rois()
