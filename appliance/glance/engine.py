"""The glance engine: candidates → model → domain-knowledge filter → lesions, cell by cell.

Why cells: the photograph is partitioned into square cells anchored at the image origin
whose side is the model grid's stride, so each cell sits inside exactly one model tile's
centre region. A lesion belongs to the cell holding its candidate's peak, and everything
about it (candidate, prompt, mask, score, id) depends only on the photograph and that cell.
Processing is therefore order-free: a live gaze stream that reaches cells one by one ends
with exactly the lesions of a batch run over the same cells, and "only new ground" is simply
"cells not yet processed". Scan mode is all cells that touch the field of view.

Lesions are delivered as :class:`LesionEvent` in two steps per cell: ``new`` with the
saliency-derived mask as soon as the candidates are scored (milliseconds), then
``updated`` once the model has segmented them (after the tile's embedding is ready), so a
fixation on ground whose tiles are not yet encoded still shows its lesions at once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from appliance.config import Config
from appliance.glance import dkf
from appliance.errors import Cancelled
from appliance.glance.candidates import Candidate, detect
from appliance.glance.heap import release_free_heap
from appliance.glance.lesions import Lesion, SegmentationResult
from appliance.glance.predictor import PromptResult, SamPredictor
from appliance.glance.spill import EmbeddingSpill
from appliance.imaging.fov import FieldOfView, find_fov
from appliance.imaging.io import Photograph
from appliance.imaging.quality import check_quality
from appliance.imaging.scale import photograph_scale
from appliance.imaging.tiling import Tile, TileGrid

logger = logging.getLogger(__name__)

#: Lesion ids are ``cell_index * ID_STRIDE + rank``: unique, and stable for a given cell.
ID_STRIDE = 1000
#: Most cell rows in one detection window (12 × 64 px): bounds the detector's memory on a
#: whole photograph; each band recomputes the saliency context margin above and below it.
BAND_ROWS = 12
#: Candidate count limit passed to the detector: high enough never to bind.
UNCAPPED = 1_000_000


@dataclass(frozen=True)
class LesionEvent:
    """A lesion that appeared (``new``) or was refined by the model (``updated``).

    Attributes
    ----------
    kind
        ``"new"`` or ``"updated"``.
    lesion
        The lesion as it now stands.
    seq
        Order of delivery within the image session, from 1.
    cell
        ``(row, col)`` of the cell the lesion belongs to.
    """

    kind: str
    lesion: Lesion
    seq: int
    cell: tuple[int, int]


@dataclass
class CellResult:
    """The lesions of one processed cell, and how long each stage took."""

    key: tuple[int, int]
    lesions: list[Lesion]
    timings_ms: dict[str, float] = field(default_factory=dict)


class GlanceEngine:
    """What stays loaded across photographs: configuration and the model predictor.

    Parameters
    ----------
    config
        The appliance configuration.
    predictor
        The SAM predictor, or None for saliency-only lesions (``[glance] use_model = false``
        or the model unavailable).
    """

    def __init__(self, config: Config, predictor: Optional[SamPredictor] = None) -> None:
        self.config = config
        self.predictor = predictor

    @classmethod
    def from_config(cls, config: Config, use_model: Optional[bool] = None) -> "GlanceEngine":
        """Build the engine, loading and verifying the model unless ``use_model`` is False.

        Raises
        ------
        ModelError
            If the model is wanted but missing or altered.
        """
        use_model = config.glance.use_model if use_model is None else use_model
        predictor = None
        if use_model:
            from appliance.glance.priority import create_in_background
            from appliance.glance.runtime.factory import build_runtime

            # Created from a lowered thread: onnxruntime's pool inherits the lower priority,
            # so background encoding yields the cores to a fixation's saliency stage.
            runtime = create_in_background(lambda: build_runtime(config))
            predictor = SamPredictor(runtime, cache_tiles=config.model.cache_tiles, spill=_spill(config))
        return cls(config, predictor)

    @property
    def model_name(self) -> str:
        """str: the model family, or ``"saliency"`` when no model runs."""
        return self.predictor.runtime.name if self.predictor is not None else "saliency"

    @property
    def model_sha256(self) -> str:
        """str: sha256 of ``models/manifest.json`` as loaded (empty without a model)."""
        return self.predictor.runtime.model_sha256 if self.predictor is not None else ""

    def forget(self, photo: Photograph) -> None:
        """Drop the photograph's cached embeddings (it was closed, or a one-shot run is done)."""
        if self.predictor is not None:
            self.predictor.forget(photo.sha256)
        release_free_heap()

    def open(self, photo: Photograph) -> "ImageSession":
        """Start working on one photograph."""
        return ImageSession(self, photo)


def _spill(config: Config) -> Optional[EmbeddingSpill]:
    """The on-disk embedding store under the data folder, or None (disabled, or not writable)."""
    if config.model.spill_tiles <= 0:
        return None
    root = config.data_dir / "cache" / "embeddings"
    try:
        return EmbeddingSpill(root, config.model.spill_tiles, min_free_bytes=config.data.min_free_mb * 2 ** 20)
    except OSError as exc:
        logger.warning("embeddings stay in RAM only (%d tiles): cannot write %s (%s)",
                       config.model.cache_tiles, root, exc)
        return None


class ImageSession:
    """One photograph being read: its field of view, scale, processed cells and lesions.

    Thread-safe: the live pipeline and a background pre-encoder may share it.
    """

    def __init__(self, engine: GlanceEngine, photo: Photograph) -> None:
        start = time.perf_counter()
        self.engine = engine
        self.photo = photo
        self.config = engine.config
        self.fov: FieldOfView = find_fov(photo.rgb)
        self.fov_deg = photo.fov_deg or self.config.imaging.fov_deg
        # The photograph's own calibration (an ophthalmic DICOM's Pixel Spacing) wins over the
        # configured size, as its own field angle wins over the configured angle.
        configured = photo.um_per_px or self.config.imaging.um_per_px
        self.um_per_px = photograph_scale(self.fov.diameter_px, self.fov_deg, configured)
        self.quality = check_quality(photo.rgb, self.fov, self.um_per_px, scale_known=configured > 0)
        self.cells = TileGrid(photo.width, photo.height, size=self.config.gaze.roi_cell_px, overlap=0)
        self.lesions: dict[int, Lesion] = {}
        self.done: dict[tuple[int, int], CellResult] = {}
        self._seq = 0
        self._lock = threading.RLock()
        self._emit_lock = threading.RLock()
        self.open_ms = (time.perf_counter() - start) * 1e3
        # Not photo.source: a camera or technician may name the file after the patient.
        logger.info("opened a %dx%d photograph: %.2f µm/px, gradable=%s", photo.width, photo.height,
                    self.um_per_px, self.quality.gradable)

    # -- cells -------------------------------------------------------------------------------
    def fov_cells(self) -> list[Tile]:
        """Return every cell that touches the field of view, in row-major order."""
        mask = self.fov.mask
        out = []
        for cell in self.cells:
            view = mask[cell.y0:cell.y0 + cell.size, cell.x0:cell.x0 + cell.size]
            if view.size and view.any():
                out.append(cell)
        return out

    def cell_index(self, key: tuple[int, int]) -> int:
        """Return the row-major index of cell ``key``."""
        return key[0] * self.cells.cols + key[1]

    def cell_bounds(self, cell: Tile) -> tuple[int, int, int, int]:
        """Return the cell's box ``(x0, y0, x1, y1)`` clipped to the image."""
        return (cell.x0, cell.y0, min(cell.x0 + cell.size, self.photo.width),
                min(cell.y0 + cell.size, self.photo.height))

    # -- processing ------------------------------------------------------------------------
    def process(self, cells: Iterable[Tile], on_event: Optional[Callable[[LesionEvent], None]] = None,
                use_model: bool = True, stop: Optional[threading.Event] = None) -> list[LesionEvent]:
        """Process the cells not yet processed; return (and deliver) their lesion events.

        Both stages in one call: :meth:`detect_cells` then :meth:`refine`.

        Parameters
        ----------
        cells
            Cells to cover; those already processed are skipped (only new ground).
        on_event
            Called with each event as soon as it exists (the UI, the store).
        use_model
            Refine lesions with the model when the engine has one.
        stop
            Checked between detection bands and model tiles: once set, :class:`Cancelled`
            is raised (the appliance is stopping; see :meth:`scan`).
        """
        events: list[LesionEvent] = []

        def collect(event: LesionEvent) -> None:
            events.append(event)
            if on_event is not None:
                on_event(event)

        pending = self.detect_cells(cells, collect, stop)
        if use_model:
            self.refine(pending, collect, stop)
        return events

    def _emit(self, kind: str, lesion: Lesion, key: tuple[int, int],
              on_event: Optional[Callable[[LesionEvent], None]]) -> None:
        # One lock over numbering and delivery: events reach subscribers in ``seq`` order even
        # when the model refines in another thread.
        with self._emit_lock:
            with self._lock:
                self._seq += 1
                self.lesions[lesion.id] = lesion
                event = LesionEvent(kind, lesion, self._seq, key)
            if on_event is not None:
                on_event(event)

    def detect_cells(self, cells: Iterable[Tile], on_event: Optional[Callable[[LesionEvent], None]] = None,
                     stop: Optional[threading.Event] = None) -> list[tuple[Tile, list[Candidate], CellResult]]:
        """Stage 1 (milliseconds): candidates and saliency-masked lesions of the new cells.

        Returns what :meth:`refine` needs to let the model segment them.
        """
        with self._lock:
            todo = [c for c in cells if c.key not in self.done]
        pending: list[tuple[Tile, list[Candidate], CellResult]] = []
        for group in self._groups(todo):
            if stop is not None and stop.is_set():
                raise Cancelled("stopped before the whole field of view was searched")
            t0 = time.perf_counter()
            found = self._candidates(group)
            dkf.prime_base_scores([c for cands in found.values() for c in cands])  # one ranker call
            saliency_ms = (time.perf_counter() - t0) * 1e3 / len(group)
            for cell in group:
                t1 = time.perf_counter()
                candidates = found.get(cell.key, [])
                lesions = self._score(cell, candidates, [None] * len(candidates))
                result = CellResult(cell.key, lesions, {"saliency": saliency_ms,
                                                        "dkf": (time.perf_counter() - t1) * 1e3})
                with self._lock:
                    self.done[cell.key] = result
                for lesion in lesions:
                    self._emit("new", lesion, cell.key, on_event)
                pending.append((cell, candidates, result))
        return pending

    def refine(self, pending: list[tuple[Tile, list[Candidate], CellResult]],
               on_event: Optional[Callable[[LesionEvent], None]] = None,
               stop: Optional[threading.Event] = None) -> None:
        """Stage 2 (encoder-bound): the model segments the promising candidates of ``pending``."""
        if self.engine.predictor is None or not pending:
            return
        t0 = time.perf_counter()
        prompts = self._prompt_all(pending, stop)
        model_ms = (time.perf_counter() - t0) * 1e3 / len(pending)
        for (cell, candidates, result), cell_prompts in zip(pending, prompts):
            if not candidates:
                continue
            result.lesions = self._score(cell, candidates, cell_prompts)
            result.timings_ms["model"] = model_ms
            for lesion in result.lesions:
                self._emit("updated", lesion, cell.key, on_event)

    def _groups(self, cells: list[Tile]) -> list[list[Tile]]:
        """Split cells into 8-connected groups, each processed through one saliency window
        (a group taller than :data:`BAND_ROWS` cell rows through one window per band)."""
        left = {c.key: c for c in cells}
        groups = []
        while left:
            key, first = next(iter(left.items()))
            del left[key]
            group, stack = [first], [key]
            while stack:
                r, c = stack.pop()
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        nb = left.pop((r + dr, c + dc), None)
                        if nb is not None:
                            group.append(nb)
                            stack.append(nb.key)
            group.sort(key=lambda t: t.key)
            # Bands of at most BAND_ROWS cell rows: one window over a whole photograph holds
            # ~300 MB of detector temporaries at once (docs/performance.md).
            first = group[0].key[0]
            bands: dict[int, list[Tile]] = {}
            for cell in group:
                bands.setdefault((cell.key[0] - first) // BAND_ROWS, []).append(cell)
            groups.extend(bands[k] for k in sorted(bands))
        return groups

    def _candidates(self, group: list[Tile]) -> dict[tuple[int, int], list[Candidate]]:
        """Detect candidates over the group's bounding window and bin them by owning cell."""
        boxes = [self.cell_bounds(c) for c in group]
        window = (min(b[0] for b in boxes), min(b[1] for b in boxes),
                  max(b[2] for b in boxes), max(b[3] for b in boxes))
        whole = window == (0, 0, self.photo.width, self.photo.height)
        # No cap on the count: a cap would make a cell's candidates depend on the window it
        # was computed in, and scan mode must equal the union of every cell's candidates.
        found = detect(self.photo.rgb, self.fov, self.um_per_px, window=None if whole else window,
                       max_candidates=UNCAPPED)
        wanted = {c.key for c in group}
        out: dict[tuple[int, int], list[Candidate]] = {}
        size = self.cells.size
        for cand in found:
            key = (min(int(cand.y // size), self.cells.rows - 1), min(int(cand.x // size), self.cells.cols - 1))
            if key in wanted:
                out.setdefault(key, []).append(cand)
        # A canonical order so ids do not depend on the detector's internal order.
        return {k: sorted(v, key=lambda c: (round(c.y, 3), round(c.x, 3))) for k, v in out.items()}

    def _prompt_boxes(self, candidates: Sequence[Candidate]) -> np.ndarray:
        half = np.array([max(c.radius_px * dkf.PROMPT_BOX_SCALE, dkf.min_box_half_px(self.um_per_px))
                         for c in candidates])
        xy = np.array([[c.x, c.y] for c in candidates]).reshape(-1, 2)
        return np.column_stack([xy - half[:, None], xy + half[:, None]])

    def _prompt_all(self, pending: list[tuple[Tile, list[Candidate], CellResult]],
                    stop: Optional[threading.Event] = None) -> list[list[Optional[PromptResult]]]:
        """Prompt the model for the candidates worth it, in one batched predictor call.

        Worth it: the saliency-stage score reaches ``[glance] prompt_min_score``. The
        encoder costs ~0.5 s a tile, and zero-shot the model refines the shape of a lesion
        rather than deciding whether it is one (DESIGN.md), so its time goes to the lesions
        a clinician may be shown. The rule looks at one candidate alone, so it does not
        depend on which cells were processed together. The predictor groups the boxes by
        model tile: each tile is encoded once and decoded in one batch.
        """
        floor = self.config.glance.prompt_min_score
        per_cell = [c for _, c, _ in pending]
        out: list[list[Optional[PromptResult]]] = [[None] * len(c) for c in per_cell]
        where = []
        for i, (cell, cands, result) in enumerate(pending):
            scores = {l.id: l.score for l in result.lesions}
            base = self.cell_index(cell.key) * ID_STRIDE
            where += [(i, j) for j, c in enumerate(cands) if scores.get(base + j, -1.0) >= floor]
        if where:
            boxes = self._prompt_boxes([per_cell[i][j] for i, j in where])
            results = self.engine.predictor.segment_boxes(self.photo.sha256, self.photo.rgb, boxes, stop)
            for (i, j), r in zip(where, results):
                out[i][j] = r
        return out

    def _score(self, cell: Tile, candidates: list[Candidate], masks: list[Optional[PromptResult]]) -> list[Lesion]:
        base = self.cell_index(cell.key) * ID_STRIDE
        lesions = []
        for rank, (cand, prompt) in enumerate(zip(candidates, masks)):
            lesion = dkf.to_lesion(cand, prompt, self.photo.rgb, self.fov, self.um_per_px, lesion_id=base + rank)
            if lesion is not None:
                lesions.append(lesion)
        return lesions

    # -- results -----------------------------------------------------------------------------
    def result(self, mode: str) -> SegmentationResult:
        """Return the lesions so far as a :class:`SegmentationResult`, best first."""
        with self._lock:
            lesions = sorted(self.lesions.values(), key=lambda l: (-l.score, l.id))
            timings: dict[str, float] = {"open": self.open_ms}
            for cell in self.done.values():
                for k, v in cell.timings_ms.items():
                    timings[k] = timings.get(k, 0.0) + v
        return SegmentationResult(
            width=self.photo.width, height=self.photo.height, mode=mode, lesions=lesions,
            display_threshold=self.config.glance.display_threshold,
            model_name=self.engine.model_name, model_sha256=self.engine.model_sha256,
            timings_ms=timings, um_per_px=self.um_per_px, gradable=self.quality.gradable, quality=dict(self.quality.measures),
            quality_reasons=dict(self.quality.reasons),
        )

    def scan(self, use_model: bool = True, stop: Optional[threading.Event] = None) -> SegmentationResult:
        """Process every cell of the field of view (scan mode) and return the result.

        ``stop``, once set, ends the scan with :class:`Cancelled` at the next detection band
        or model tile, so a stopping appliance is not held for the rest of a photograph (and
        no encoder run is left going when the process exits, which aborts it).
        """
        self.process(self.fov_cells(), use_model=use_model, stop=stop)
        release_free_heap()  # the whole-photograph pass's temporaries (docs/performance.md)
        return self.result("scan")
