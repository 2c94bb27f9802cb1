"""Background pre-encoding: encode tiles before the clinician's gaze reaches them.

The encoder costs about 0.3 s per tile even quantised (DESIGN.md), so it cannot sit
between a fixation and its lesions. As soon as a photograph opens, a named background
thread encodes the model tiles that touch the field of view, most promising first (tiles
holding the most MA candidates of a whole-image saliency pass), so by the time the
clinician looks somewhere its embedding is usually cached. While the live pipeline is
busy with a fixation the thread yields between tiles, so it never delays the foreground by
more than the one tile in flight. It encodes no more tiles than the predictor keeps
(``[model] cache_tiles`` in RAM plus ``[model] spill_tiles`` on disk).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional

from appliance.glance.candidates import detect
from appliance.glance import engine
from appliance.glance.engine import ImageSession
from appliance.glance.heap import release_free_heap
from appliance.glance.priority import lower_this_thread
from appliance.imaging.tiling import Tile

logger = logging.getLogger(__name__)


def within_cache(tiles: list[Tile], capacity: int) -> list[Tile]:
    """The first ``capacity`` of ``tiles`` (most promising first).

    The predictor keeps at most ``capacity`` embeddings (least recently used out first):
    encoding past it would evict the tiles encoded first, which are the most promising
    ones, so the bound limits what pre-encoding holds (2 MiB a tile, docs/performance.md)
    rather than wasting encoder time.
    """
    if len(tiles) > capacity:
        logger.info("pre-encoding the %d most promising of %d tiles ([model] cache_tiles + spill_tiles)",
                    capacity, len(tiles))
    return tiles[:capacity]


def tile_order(session: ImageSession) -> list[Tile]:
    """Return the model tiles touching the FOV, most candidates first (then row-major).

    Candidates are counted band by band, in the engine's bands (:data:`~appliance.glance.
    engine.BAND_ROWS` cell rows; each window equals the whole-image detection inside it):
    one whole-photograph pass would hold ~300 MB of detector temporaries while the
    encoder's arena grows (docs/performance.md).
    """
    predictor = session.engine.predictor
    if predictor is None:
        return []
    rgb = session.photo.rgb
    grid = predictor.grid(rgb)
    mask = session.fov.mask
    tiles = [t for t in grid if mask[t.y0:t.y0 + t.size, t.x0:t.x0 + t.size].any()]
    counts = {t.key: 0 for t in tiles}
    height, width = rgb.shape[:2]
    band = engine.BAND_ROWS * session.cells.size
    for y0 in range(0, height, band):
        window = (0, y0, width, min(height, y0 + band))
        # Counting needs no ranking: skip the CNN, which would compete with the first fixations.
        for cand in detect(rgb, session.fov, session.um_per_px, window=window, rank=False):
            key = grid.best_tile(cand.x, cand.y).key
            if key in counts:
                counts[key] += 1
    release_free_heap()
    return sorted(tiles, key=lambda t: (-counts[t.key], t.key))


class PreEncoder:
    """Encodes a photograph's tiles in a background thread.

    Parameters
    ----------
    session
        The open photograph.
    busy
        Set by the foreground while it processes a fixation; the encoder waits between
        tiles while it is set.
    """

    def __init__(self, session: ImageSession, busy: Optional[threading.Event] = None) -> None:
        self.session = session
        self.busy = busy or threading.Event()
        self.encoded = 0
        self.total = 0
        self.seconds: Optional[float] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="glance-preencode", daemon=True)

    def start(self) -> "PreEncoder":
        """Start the thread; returns self."""
        self._thread.start()
        return self

    def _run(self) -> None:
        lower_this_thread()  # speculative work: never ahead of a fixation for the cores
        start = time.perf_counter()
        predictor = self.session.engine.predictor
        if predictor is None:
            return
        tiles = within_cache(tile_order(self.session), predictor.capacity)
        self.total = len(tiles)
        photo = self.session.photo
        for tile in tiles:
            while self.busy.is_set() and not self._stop.is_set():
                time.sleep(0.005)
            if self._stop.is_set():
                return
            self.encoded += predictor.encode_tiles(photo.sha256, photo.rgb, [tile])
        self.seconds = time.perf_counter() - start
        release_free_heap()  # onnxruntime's per-tile temporaries, before the reading's bursts
        logger.info("pre-encoded %d tiles of %s in %.1f s", self.total, photo.source, self.seconds)

    @property
    def done(self) -> bool:
        """bool: every tile is encoded (or the thread stopped)."""
        return not self._thread.is_alive()

    def join(self, timeout_s: Optional[float] = None) -> None:
        """Wait for the thread."""
        self._thread.join(timeout_s)

    def stop(self) -> None:
        """Stop after the tile in flight."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
