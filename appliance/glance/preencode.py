"""Background pre-encoding: encode tiles before the clinician's gaze reaches them.

The encoder costs about 0.3 s per tile even quantised (DESIGN.md), so it cannot sit
between a fixation and its lesions. As soon as a photograph opens, a named background
thread encodes the model tiles that touch the field of view: first the tiles the engine
will prompt the model on (their candidates reach ``[glance] prompt_min_score``), then the
rest by how many candidates they hold, so by the time the clinician looks somewhere its
embedding is usually cached. While the live pipeline is
busy with a fixation the thread yields between tiles, so it never delays the foreground by
more than the one tile in flight. It encodes no more tiles than the predictor keeps
(``[model] cache_tiles`` in RAM plus ``[model] spill_tiles`` on disk).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Optional

from appliance.glance.candidates import detect
from appliance.glance import dkf, engine
from appliance.glance.engine import ImageSession
from appliance.glance.heap import release_free_heap
from appliance.glance.priority import lower_this_thread
from appliance.imaging.tiling import Tile

logger = logging.getLogger(__name__)


class Busy:
    """Foreground work in progress, counted: the pre-encoder waits while any is running.

    Why a count and not a :class:`threading.Event`: the gaze thread (a fixation's ground),
    the model thread (its refinement) and the UI (a tapped prompt) each mark their own
    work, and one of them finishing must not unmark the others'. Use ``with busy:``.
    """

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> "Busy":
        with self._lock:
            self._count += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._count -= 1

    def is_set(self) -> bool:
        """bool: some foreground work is running."""
        return self._count > 0


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


@dataclass(frozen=True)
class TilePlan:
    """The model tiles touching the FOV in encoding order; the first ``prompted`` are the
    tiles the engine will prompt the model on, wherever the clinician looks."""

    tiles: list[Tile]
    prompted: int


def tile_order(session: ImageSession) -> TilePlan:
    """Return the model tiles touching the FOV: those the model will be prompted on first.

    A tile comes earlier the more of its candidates reach ``[glance] prompt_min_score``
    (the engine prompts the model for exactly those, wherever the clinician looks), then
    the more candidates it holds at all, then in row-major order. Encoding the prompted
    tiles first is what lets a cold reading's model masks catch up: the other tiles are
    encoded only so that every tile is ready in the end (docs/performance.md).

    Candidates are detected band by band, in the engine's bands (:data:`~appliance.glance.
    engine.BAND_ROWS` cell rows; each window equals the whole-image detection inside it):
    one whole-photograph pass would hold ~300 MB of detector temporaries while the
    encoder's arena grows (docs/performance.md).
    """
    predictor = session.engine.predictor
    if predictor is None:
        return TilePlan([], 0)
    rgb = session.photo.rgb
    grid = predictor.grid(rgb)
    mask = session.fov.mask
    tiles = [t for t in grid if mask[t.y0:t.y0 + t.size, t.x0:t.x0 + t.size].any()]
    counts = {t.key: 0 for t in tiles}
    prompted = {t.key: 0 for t in tiles}
    floor = session.config.glance.prompt_min_score
    height, width = rgb.shape[:2]
    band = engine.BAND_ROWS * session.cells.size
    for y0 in range(0, height, band):
        window = (0, y0, width, min(height, y0 + band))
        found = detect(rgb, session.fov, session.um_per_px, window=window, max_candidates=engine.UNCAPPED)
        dkf.prime_base_scores(found)  # one ranker call per band, as the engine makes per window
        for cand in found:
            key = grid.best_tile(cand.x, cand.y).key
            if key not in counts:
                continue
            counts[key] += 1
            lesion = dkf.to_lesion(cand, None, rgb, session.fov, session.um_per_px, lesion_id=0)
            if lesion is not None and lesion.score >= floor:
                prompted[key] += 1
    release_free_heap()
    ordered = sorted(tiles, key=lambda t: (-prompted[t.key], -counts[t.key], t.key))
    return TilePlan(ordered, sum(1 for n in prompted.values() if n))


class PreEncoder:
    """Encodes a photograph's tiles in a background thread.

    Parameters
    ----------
    session
        The open photograph.
    busy
        Held by the foreground (``with busy:``) while it processes a fixation, refines it or
        decodes a tapped prompt; the encoder waits between tiles while anyone holds it.
    """

    def __init__(self, session: ImageSession, busy: Optional[Busy] = None) -> None:
        self.session = session
        self.busy = busy or Busy()
        self.encoded = 0
        self.total = 0
        self.prompted = 0
        self.seconds: Optional[float] = None
        self.prompted_seconds: Optional[float] = None
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
        plan = tile_order(self.session)
        tiles = within_cache(plan.tiles, predictor.capacity)
        self.total, self.prompted = len(tiles), min(plan.prompted, len(tiles))
        photo = self.session.photo
        for i, tile in enumerate(tiles):
            if i == self.prompted:
                self.prompted_seconds = time.perf_counter() - start
            while self.busy.is_set() and not self._stop.is_set():
                time.sleep(0.005)
            if self._stop.is_set():
                return
            self.encoded += predictor.encode_tiles(photo.sha256, photo.rgb, [tile])
        self.seconds = time.perf_counter() - start
        if self.prompted_seconds is None:
            self.prompted_seconds = self.seconds
        release_free_heap()  # onnxruntime's per-tile temporaries, before the reading's bursts
        logger.info("pre-encoded %d tiles of %s in %.1f s (the %d the model is prompted on in %.1f s)",
                    self.total, photo.source, self.seconds, self.prompted, self.prompted_seconds)

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
