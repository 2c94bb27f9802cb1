"""One photograph in, one :class:`SegmentationResult` out: scan mode or batch gaze mode.

What ``glanceseg segment``, ``glanceseg study add`` and ``glanceseg eval`` call.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Optional

from appliance.gaze.csv_replay import read_gaze_csv
from appliance.glance.engine import GlanceEngine
from appliance.glance.lesions import SegmentationResult
from appliance.glance.live import segment_gaze
from appliance.imaging.io import Photograph

logger = logging.getLogger(__name__)


def segment_photograph(photo: Photograph, engine: GlanceEngine, gaze_csv: Optional[Path] = None,
                       px_per_deg: Optional[float] = None,
                       stop: Optional[threading.Event] = None) -> SegmentationResult:
    """Segment the microaneurysms of one photograph.

    Parameters
    ----------
    photo
        The photograph.
    engine
        The glance engine (model loaded, or saliency only).
    gaze_csv
        A gaze recording in image px (DESIGN.md's CSV contract): gaze mode, only glanced
        ground is processed. None: scan mode over the whole field of view.
    px_per_deg
        Image px per degree for gaze rows that do not carry ``px_per_deg``; None uses the
        configured display geometry with the photograph fitted to the screen.
    stop
        Scan mode: once set, the scan ends early with :class:`appliance.errors.Cancelled`
        (the UI's analysis worker at shutdown).

    Raises
    ------
    GazeError
        If the gaze file is malformed.
    Cancelled
        If ``stop`` was set during a scan.
    """
    start = time.perf_counter()
    session = engine.open(photo)
    try:
        if gaze_csv is None:
            result = session.scan(stop=stop)
        else:
            result = segment_gaze(session, read_gaze_csv(gaze_csv), px_per_deg)
    finally:
        engine.forget(photo)  # a one-shot run will not read it again, nor a failed one
    result.timings_ms["total"] = (time.perf_counter() - start) * 1e3
    return result

