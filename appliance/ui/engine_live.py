"""The reader's live glance: the real pipeline of one opened photograph.

Opening a photograph in the reader opens an :class:`~appliance.glance.engine.ImageSession` on
the stored pixels, starts a :class:`~appliance.glance.preencode.PreEncoder` (model tiles
encoded in the background, yielding while a fixation is processed) and a
:class:`~appliance.glance.live.GlancePipeline` fed by the gaze the reader receives (pointer,
replay). Each lesion event is stamped with the wall-clock time at which the sample that ended
the fixation arrived, so the browser can measure fixation -> lesion drawn.

A tap on an unmarked spot prompts the model with a small box centred there; without a model
there is nothing to prompt and the caller records the clinician's mark as a disc.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

import numpy as np

from appliance.config import Config
from appliance.gaze.base import GazeSample
from appliance.glance.lesions import Lesion
from appliance.ui.services import LesionEvent, display_px_per_deg

logger = logging.getLogger(__name__)

#: Half side of the box prompted at a tap, in µm on the retina (an MA is 10-125 µm across).
TAP_BOX_HALF_UM = 60.0
#: Lower bound of that half side in image px (tiny photographs).
TAP_BOX_HALF_MIN_PX = 6.0


def image_px_per_deg(config: Config, width: int, height: int) -> float:
    """Image px per degree with the photograph fitted to the configured screen."""
    fit = min(config.display.width_px / width, config.display.height_px / height)
    return display_px_per_deg(config) / fit


class EngineLiveGlance:
    """:class:`appliance.ui.services.LiveGlance` over the glance pipeline of one photograph.

    Parameters
    ----------
    engine
        The process's :class:`~appliance.glance.engine.GlanceEngine`.
    photo
        The photograph (``appliance.imaging.io.Photograph``), as stored.
    px_per_deg
        Image px per degree for samples that carry none.
    preencode
        Start background pre-encoding of the model tiles (when the engine has a model).
    """

    def __init__(self, engine: Any, photo: Any, px_per_deg: float, preencode: bool = True) -> None:
        from appliance.glance.live import GlancePipeline
        from appliance.glance.preencode import PreEncoder

        self.engine = engine
        self.photo = photo
        self.session = engine.open(photo)
        self.pipeline = GlancePipeline.for_session(self.session, px_per_deg=px_per_deg)
        self._arrived_ns = 0
        self._sink: Optional[Callable[[list[LesionEvent]], None]] = None
        self.preencoder: Optional[PreEncoder] = None
        if preencode and engine.predictor is not None:
            self.preencoder = PreEncoder(self.session, busy=self.pipeline.busy).start()

    @classmethod
    def for_services(cls, photo: Any, services: Any) -> "EngineLiveGlance":
        """The default ``Services.live_factory``: the services' engine and configuration."""
        return cls(services.get_engine(), photo, image_px_per_deg(services.config, photo.width, photo.height))

    def set_sink(self, sink: Callable[[list[LesionEvent]], None]) -> None:
        """Deliver each event to ``sink`` the moment the pipeline emits it.

        A fixation's saliency lesions (``new``) then reach the browser before the model has
        refined them (``updated``); ``push``/``tick``/``flush`` return nothing from then on.
        """
        self._sink = sink
        self.pipeline.subscribe(lambda e: sink([LesionEvent(e.kind, e.lesion, self._arrived_ns)]))

    def _run(self, step: Callable[[], list[Any]]) -> list[LesionEvent]:
        self._arrived_ns = time.time_ns()
        events = step()
        if self._sink is not None:
            return []
        return [LesionEvent(e.kind, e.lesion, self._arrived_ns) for e in events]

    def push(self, sample: GazeSample) -> list[LesionEvent]:
        """Feed one sample; return the events of the fixation it ended (if any)."""
        return self._run(lambda: self.pipeline.feed(sample))

    def tick(self, now_ns: int) -> list[LesionEvent]:
        """No sample by ``now_ns`` (stream time): end a fixation that has gone quiet."""
        return self._run(lambda: self.pipeline.tick(now_ns))

    def flush(self) -> list[LesionEvent]:
        """End of a recording: close the last fixation and process its ground."""
        return self._run(self.pipeline.flush)

    def prompt(self, x: float, y: float) -> Optional[Lesion]:
        """Prompt the model with a small box centred on a tapped image point.

        Returns
        -------
        Lesion or None
            The model's mask (``source == "model"``, id 0: the store gives added lesions their
            ids), or None when no model is loaded or the mask is empty.
        """
        predictor = self.engine.predictor
        if predictor is None:
            return None
        half = max(TAP_BOX_HALF_MIN_PX, TAP_BOX_HALF_UM / max(self.session.um_per_px, 1e-6))
        box = np.array([[x - half, y - half, x + half, y + half]], dtype=np.float64)
        with self.pipeline.busy:  # the pre-encoder yields while the clinician waits
            found = predictor.segment_boxes(self.photo.sha256, self.photo.rgb, box)
        if not found or found[0] is None or not found[0].mask.any():
            return None
        r = found[0]
        ys, xs = np.nonzero(r.mask)
        y0, x0 = int(ys.min()), int(xs.min())
        crop = r.mask[y0:ys.max() + 1, x0:xs.max() + 1]
        bx, by = r.x0 + x0, r.y0 + y0
        return Lesion(0, float(xs.mean() + r.x0), float(ys.mean() + r.y0), int(crop.sum()),
                      (bx, by, bx + crop.shape[1], by + crop.shape[0]), float(r.iou), "model", crop)

    def close(self) -> None:
        """Stop pre-encoding and model refinement; drop the photograph's cached embeddings."""
        if self.preencoder is not None:
            self.preencoder.stop()
        self.pipeline.close()
        self.engine.forget(self.photo)
