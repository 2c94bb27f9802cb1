"""Stateful SAM predictor over the fixed tile grid: cached tile embeddings, batched box prompts.

Frames: ``rgb`` is the whole photograph, HxWx3 uint8 RGB; boxes and results are in *image
px*. The predictor cuts tiles of the model's input size S from the fixed grid of
:class:`appliance.imaging.tiling.TileGrid` (overlap 64 px, anchored at the image origin),
so the same place always maps to the same tile and its embedding can be cached, encoded
ahead of the gaze in the background, and reused by a later batch run.

The encoder (hundreds of ms a tile on a CPU) is the expensive step; the decoder (a few ms a
prompt) is cheap. :meth:`SamPredictor.encode_tiles` fills the cache from a background
thread; :meth:`SamPredictor.segment_boxes` only encodes what is missing.

Memory (docs/performance.md): a LiteMedSAM embedding is 1x256x64x64, 4 MiB in float32, and
the background pre-encoder fills the cache with every FOV tile of a photograph (~290 for the
largest IDRiD one, 1.1 GiB in float32). The cache therefore keeps embeddings in float16
(2 MiB a tile) and widens them back to float32 only for the decoder call. Every decode goes
through the float16 copy, a fresh encode included, so a mask never depends on whether its
tile came from the cache. The decoder runs at most ``decode_batch`` prompts a call: SAM's
decoder repeats the embedding for every prompt (~4 MiB of activations each), so one
unbounded call over a tile with many candidates would grow onnxruntime's arena by hundreds of
MB; per-prompt time is flat from a batch of about 8 up. Even in float16 a whole photograph's
embeddings (574 MB) would take half the appliance's memory budget, so only the
``cache_tiles`` most recently used stay in RAM; with a :class:`~appliance.glance.spill.
EmbeddingSpill` the ones it evicts go to disk and are read back (about a millisecond) instead
of encoded again (half a second).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Optional

import numpy as np
import numpy.typing as npt

from appliance.errors import Cancelled
from appliance.glance.runtime.base import MAX_DECODE_BATCH, SamRuntime
from appliance.glance.spill import EmbeddingSpill
from appliance.imaging.tiling import Tile, TileGrid

logger = logging.getLogger(__name__)

DEFAULT_OVERLAP_PX = 64
DEFAULT_MARGIN_PX = 8
#: dtype the embedding cache keeps (float16 halves it; masks agree, see docs/performance.md)
DEFAULT_CACHE_DTYPE = np.float16


@dataclass
class PromptResult:
    """The model's answer to one box prompt.

    Attributes
    ----------
    mask
        hxw bool crop of the lesion mask: the box grown by the predictor's margin, clipped
        to the tile that decoded it and to the image.
    x0, y0
        The crop's top-left corner in image px (``mask[r, c]`` is image pixel
        ``(x0 + c, y0 + r)``).
    iou
        The decoder's own IoU estimate for the mask (not calibrated for MAs).
    tile
        The grid tile whose embedding decoded the prompt.
    """

    mask: np.ndarray = field(repr=False)
    x0: int
    y0: int
    iou: float
    tile: Tile


@dataclass
class CacheStats:
    """Counters of the embedding cache (for tests, logs and the benchmark)."""

    hits: int = 0
    misses: int = 0
    encoded: int = 0
    evicted: int = 0
    spilled: int = 0
    reloaded: int = 0
    spill_failed: int = 0


class SamPredictor:
    """Tile-grid predictor with an LRU embedding cache keyed by ``(image_key, tile.key)``.

    Parameters
    ----------
    runtime
        The SAM runtime (encoder + batched decoder).
    cache_tiles
        Embeddings kept in RAM (``[model] cache_tiles``); LiteMedSAM's are 2 MiB each in
        float16.
    overlap_px
        Grid overlap in px.
    margin_px
        How far each result's crop extends past its box, in image px.
    cache_dtype
        dtype the cache stores embeddings in (float16 by default; float32 keeps them exact).
    decode_batch
        Most box prompts per decoder call.
    spill
        Where embeddings evicted from RAM go (read back on the next use), or None to drop
        them.

    Notes
    -----
    Thread-safe: one thread may pre-encode while another segments. A tile being encoded
    by one thread is waited for, not encoded again, by another.
    """

    def __init__(self, runtime: SamRuntime, cache_tiles: int = 512, overlap_px: int = DEFAULT_OVERLAP_PX,
                 margin_px: int = DEFAULT_MARGIN_PX, cache_dtype: npt.DTypeLike = DEFAULT_CACHE_DTYPE,
                 decode_batch: int = MAX_DECODE_BATCH, spill: Optional[EmbeddingSpill] = None) -> None:
        if cache_tiles < 1:
            raise ValueError("cache_tiles must be at least 1.")
        if decode_batch < 1:
            raise ValueError("decode_batch must be at least 1.")
        self.runtime = runtime
        self.cache_tiles = int(cache_tiles)
        self.cache_dtype = np.dtype(cache_dtype)
        if self.cache_dtype.kind != "f":
            raise ValueError(f"cache_dtype must be a float dtype, not {self.cache_dtype}.")
        self.decode_batch = int(decode_batch)
        self.overlap_px = int(overlap_px)
        self.margin_px = int(margin_px)
        self.stats = CacheStats()
        self._cache: "OrderedDict[tuple[Hashable, tuple[int, int]], np.ndarray]" = OrderedDict()
        self._pending: dict[tuple[Hashable, tuple[int, int]], threading.Event] = {}
        self._spilling: dict[tuple[Hashable, tuple[int, int]], np.ndarray] = {}  # being written
        self._lock = threading.Lock()
        self.spill = spill

    @property
    def capacity(self) -> int:
        """int: embeddings kept in all, in RAM and on disk (what pre-encoding may fill)."""
        return self.cache_tiles + (self.spill.capacity if self.spill is not None else 0)

    def grid(self, rgb: np.ndarray) -> TileGrid:
        """Return the fixed tile grid for a photograph (HxWx3) at the model's input size."""
        return TileGrid(rgb.shape[1], rgb.shape[0], self.runtime.input_size, self.overlap_px)

    def is_cached(self, image_key: Hashable, tile: Tile) -> bool:
        """Whether the tile's embedding is kept, in RAM or on disk (does not count as a hit)."""
        key = (image_key, tile.key)
        with self._lock:
            if key in self._cache or key in self._spilling:
                return True
        return self.spill is not None and key in self.spill

    def forget(self, image_key: Hashable) -> None:
        """Drop every kept embedding of one image, files included (it was closed)."""
        with self._lock:
            for key in [k for k in self._cache if k[0] == image_key]:
                del self._cache[key]
        if self.spill is not None:
            self.spill.forget(image_key)

    @property
    def cache_nbytes(self) -> int:
        """int: bytes the embeddings in RAM hold (for the benchmark and memory tests)."""
        with self._lock:
            return sum(e.nbytes for e in self._cache.values())

    @property
    def spill_nbytes(self) -> int:
        """int: bytes of the embedding files on disk."""
        return self.spill.nbytes if self.spill is not None else 0

    def _compact(self, emb: np.ndarray) -> np.ndarray:
        """The form an embedding is cached in (``cache_dtype``; a no-op for float32)."""
        return np.ascontiguousarray(emb, dtype=self.cache_dtype)

    @staticmethod
    def _widen(cached: np.ndarray) -> np.ndarray:
        """A cached embedding as the decoder takes it: float32 (a 4 MiB temporary unless cached so)."""
        return cached.astype(np.float32, copy=False)

    def decode_input(self, image_key: Hashable, rgb: np.ndarray, tile: Tile) -> np.ndarray:
        """Return the tile's embedding as the decoder takes it (float32, through the cache)."""
        return self._widen(self.embedding(image_key, rgb, tile))

    def embedding(self, image_key: Hashable, rgb: np.ndarray, tile: Tile) -> np.ndarray:
        """Return the tile's embedding as cached (``cache_dtype``): from RAM, from disk, or encoded."""
        key = (image_key, tile.key)
        while True:
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                cached = self._cache.get(key, self._spilling.get(key))
                if cached is not None:
                    self.stats.hits += 1
                    return cached
                waiting = self._pending.get(key)
                if waiting is None:
                    done = threading.Event()
                    self._pending[key] = done
                    self.stats.misses += 1
                    break
            waiting.wait()
        try:
            emb = self.spill.get(key) if self.spill is not None else None  # its own folder: same dtype
            if emb is not None:
                self._keep(key, emb, fresh=False)
                return emb
            emb = self._compact(self.runtime.encode(self.grid(rgb).cut(rgb, tile)))
            self._keep(key, emb, fresh=True)
            logger.debug("encoded tile %s", tile.key)
            return emb
        finally:
            with self._lock:
                self._pending.pop(key, None)
            done.set()

    def _keep(self, key: tuple[Hashable, tuple[int, int]], emb: np.ndarray, fresh: bool) -> None:
        """Put an embedding (``fresh``: just encoded) in RAM; what that evicts goes to the spill."""
        with self._lock:
            if fresh:
                self.stats.encoded += 1
            else:
                self.stats.reloaded += 1
            self._cache[key] = emb
            evicted = [self._cache.popitem(last=False) for _ in range(len(self._cache) - self.cache_tiles)]
            self.stats.evicted += len(evicted)
            if self.spill is None:
                return
            evicted = [(k, e) for k, e in evicted if k not in self.spill]
            self._spilling.update(evicted)
        for old_key, old in evicted:  # outside the lock: a disk write must not stall a fixation
            try:
                self.spill.put(old_key, old)
                self.stats.spilled += 1
            except OSError as exc:  # a full or failing disk costs a re-encode, never a result
                log = logger.debug if self.stats.spill_failed else logger.warning
                self.stats.spill_failed += 1
                log("could not keep an embedding on disk (%s); it will be encoded again", exc)
            finally:
                with self._lock:
                    self._spilling.pop(old_key, None)

    def encode_tiles(self, image_key: Hashable, rgb: np.ndarray, tiles: Iterable[Tile],
                     stop: Optional[threading.Event] = None) -> int:
        """Encode tiles not yet cached, in order (background pre-encoding).

        Parameters
        ----------
        image_key
            Identifies the photograph (e.g. its sha256); part of the cache key.
        rgb
            The photograph, HxWx3 uint8 RGB.
        tiles
            Tiles of ``self.grid(rgb)``, most urgent first.
        stop
            Checked between tiles; set it to abandon the rest (image closed).

        Returns
        -------
        int
            How many tiles this call encoded.
        """
        count = 0
        for tile in tiles:
            if stop is not None and stop.is_set():
                break
            if self.is_cached(image_key, tile):
                continue
            before = self.stats.encoded
            self.embedding(image_key, rgb, tile)
            count += int(self.stats.encoded > before)
        return count

    def segment_boxes(self, image_key: Hashable, rgb: np.ndarray, boxes_xyxy: np.ndarray,
                      stop: Optional[threading.Event] = None) -> list[PromptResult]:
        """Segment box prompts: one batched decoder call per tile.

        Each box goes to the tile whose centre is nearest the box centre
        (``TileGrid.best_tile``), which holds it at least ``overlap / 2`` px from the edge.

        Parameters
        ----------
        image_key
            Identifies the photograph; part of the cache key.
        rgb
            The photograph, HxWx3 uint8 RGB.
        boxes_xyxy
            Nx4 float ``(x0, y0, x1, y1)`` in image px.
        stop
            Checked before each tile: once set, the call ends with :class:`Cancelled` instead
            of encoding on (an encoder run cannot be interrupted, and one left running when
            the process exits aborts it).

        Returns
        -------
        list of PromptResult
            One per box, in the order given.

        Raises
        ------
        Cancelled
            If ``stop`` was set.
        """
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        if not np.all(np.isfinite(boxes)) or np.any(boxes[:, 2:] < boxes[:, :2]):
            raise ValueError("Boxes must be finite (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0.")
        grid = self.grid(rgb)
        height, width = rgb.shape[:2]
        groups: dict[tuple[int, int], list[int]] = {}
        tiles: dict[tuple[int, int], Tile] = {}
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            tile = grid.best_tile((x0 + x1) / 2.0, (y0 + y1) / 2.0)
            groups.setdefault(tile.key, []).append(i)
            tiles[tile.key] = tile
        results: list[Optional[PromptResult]] = [None] * len(boxes)
        size = grid.size
        for key, idx in groups.items():
            if stop is not None and stop.is_set():
                raise Cancelled("stopped before the model had segmented every prompt")
            tile = tiles[key]
            emb = self.decode_input(image_key, rgb, tile)
            local = boxes[idx] - np.array([tile.x0, tile.y0, tile.x0, tile.y0], dtype=np.float64)
            local = np.clip(local, 0, size - 1).astype(np.float32)
            for start in range(0, len(idx), self.decode_batch):
                chunk = idx[start:start + self.decode_batch]
                logits, iou = self.runtime.decode(emb, local[start:start + self.decode_batch])
                for j, i in enumerate(chunk):
                    results[i] = self._crop(logits[j], float(iou[j]), boxes[i], tile, width, height)
        return [r for r in results if r is not None]

    def _crop(self, logits: np.ndarray, iou: float, box: np.ndarray, tile: Tile, width: int,
              height: int) -> PromptResult:
        """Cut one prompt's SxS tile logits down to its box plus margin, in image px.

        Only the crop is kept, so a batch's NxSxS logits are freed as soon as it is cropped.
        """
        bx0, by0, bx1, by1 = box
        cx0 = max(math.floor(bx0) - self.margin_px, tile.x0, 0)
        cy0 = max(math.floor(by0) - self.margin_px, tile.y0, 0)
        cx1 = min(math.ceil(bx1) + self.margin_px + 1, tile.x0 + tile.size, width)
        cy1 = min(math.ceil(by1) + self.margin_px + 1, tile.y0 + tile.size, height)
        crop = logits[cy0 - tile.y0:cy1 - tile.y0, cx0 - tile.x0:cx1 - tile.x0] > 0
        return PromptResult(np.ascontiguousarray(crop), int(cx0), int(cy0), iou, tile)
