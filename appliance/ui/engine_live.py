"""The live reader over the appliance's own glance parts, until ``appliance.glance`` ships its
live pipeline (SWAP: ``appliance.glance.live.open_live_session`` wins when present).

Gaze samples -> ``gaze.fixations.FixationDetector`` -> ``gaze.roi.RoiTracker`` (new ground) ->
``glance.engine.ImageSession.process`` on the newly covered cells -> lesion events. The engine
(and its model) is built once per process and shared by every photograph.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any, Optional

import numpy as np

from appliance.config import Config
from appliance.errors import ModelError
from appliance.gaze.base import GazeSample
from appliance.glance.lesions import Lesion
from appliance.ui.services import LesionEvent

logger = logging.getLogger(__name__)

_ENGINES: dict[int, Any] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(config: Config) -> Any:
    """Return the process's GlanceEngine for ``config``; saliency only when the model is missing."""
    from appliance.glance.engine import GlanceEngine

    with _ENGINES_LOCK:
        engine = _ENGINES.get(id(config))
        if engine is None:
            try:
                engine = GlanceEngine.from_config(config)
            except ModelError as exc:
                logger.warning("model unavailable, live lesions from saliency only: %s", exc)
                engine = GlanceEngine.from_config(config, use_model=False)
            _ENGINES[id(config)] = engine
        return engine


class EngineLiveGlance:
    """:class:`appliance.ui.services.LiveGlance` over fixations, ROI tracking and the engine.

    Parameters
    ----------
    rgb
        The photograph, H×W×3 uint8.
    config
        The configuration (gaze and glance sections).
    image_px_per_deg
        Image px per degree for samples without one (the photograph fitted to the screen).
    """

    def __init__(self, rgb: np.ndarray, config: Config, image_px_per_deg: float) -> None:
        from appliance.gaze.fixations import FixationDetector, FixationParams
        from appliance.gaze.heatmap import HeatmapParams
        from appliance.gaze.roi import RoiTracker
        from appliance.imaging.io import Photograph

        g = config.gaze
        h, w = rgb.shape[:2]
        photo = Photograph(rgb=rgb, source="reader", sha256=hashlib.sha256(rgb.tobytes()).hexdigest())
        self.session = shared_engine(config).open(photo)
        self.detector = FixationDetector(
            FixationParams(dispersion_deg=g.fixation_dispersion_deg, min_duration_ms=g.fixation_min_ms,
                           max_gap_ms=g.fixation_max_gap_ms, clock_jump_ms=g.fixation_clock_jump_ms),
            default_px_per_deg=image_px_per_deg, image_size=(w, h))
        self.roi = RoiTracker(w, h, HeatmapParams(sigma_deg=g.heatmap_sigma_deg, cell_px=g.heatmap_cell_px),
                              threshold_s=g.roi_threshold_s, cell_px=g.roi_cell_px)

    def push(self, sample: GazeSample) -> list[LesionEvent]:
        """Feed one sample; when it ends a fixation, process the cells it newly covered."""
        out: list[LesionEvent] = []
        for fixation in self.detector.feed(sample):
            fixation_wall_ns = time.time_ns()
            ground = self.roi.add_fixation(fixation)
            if ground.empty:
                continue
            cells = [self.session.cells.tile(r, c) for r, c in ground.cells]
            for ev in self.session.process(cells):
                out.append(LesionEvent(ev.kind, ev.lesion, fixation_wall_ns))
        return out

    def prompt(self, x: float, y: float) -> Optional[Lesion]:
        """Look in the tapped cell; return the session's nearest lesion within 12 px, else None."""
        size = self.session.cells.size
        row = min(int(y // size), self.session.cells.rows - 1)
        col = min(int(x // size), self.session.cells.cols - 1)
        self.session.process([self.session.cells.tile(row, col)])
        near = [l for l in self.session.lesions.values() if np.hypot(l.x - x, l.y - y) <= 12.0]
        return min(near, key=lambda l: np.hypot(l.x - x, l.y - y)) if near else None

    def close(self) -> None:
        """Nothing held beyond the shared engine."""
