"""The incremental glance pipeline: gaze samples in, lesion events out, as the clinician reads.

One code path for live and batch: :class:`GlancePipeline` feeds samples to the photograph's
:class:`~appliance.gaze.gazemap.GazeMap`; every fixation that ends yields the grid cells it
newly covered, and only those are processed (:meth:`ImageSession.process`). Because a
cell's lesions depend only on the photograph and the cell, the lesions at the end of a live
stream equal those of a batch run over the same gaze (same ids, same centroids).

:class:`LiveReader` runs a pipeline on a :class:`~appliance.gaze.base.GazeSource` in a
named background thread and delivers events to subscribers (the UI's server-sent events,
the store) in order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional

from appliance.errors import Cancelled
from appliance.gaze.base import GazeSample, GazeSource
from appliance.gaze.gazemap import GazeMap
from appliance.gaze.roi import NewGround
from appliance.glance.engine import ImageSession, LesionEvent
from appliance.glance.gaze_scoring import GazeScoringParams, rescore
from appliance.glance.lesions import SegmentationResult
from appliance.glance.preencode import Busy
from appliance.glance.priority import lower_this_thread

logger = logging.getLogger(__name__)

Subscriber = Callable[[LesionEvent], None]


@dataclass
class FixationTiming:
    """How long one fixation's new ground took, from the moment the fixation ended.

    ``first_ms`` is the time to its first lesion event (saliency lesions; None when it
    produced none), ``done_ms`` the time until its cells were fully processed (model
    refinement included). ``ended_ns`` is the stream time of the sample (or tick) that ended
    the fixation; ``first_at`` and ``done_at`` are ``time.perf_counter()`` stamps, so a
    real-time replay can add the time the fixation waited in the queue.
    """

    index: int
    cells: int
    lesions: int
    first_ms: Optional[float]
    done_ms: float
    ended_ns: int = 0
    first_at: Optional[float] = None
    done_at: float = 0.0


@dataclass
class PipelineStats:
    """Counters of a pipeline run."""

    fixations: int = 0
    cells: int = 0
    events: int = 0
    timings: list[FixationTiming] = field(default_factory=list)


class GlancePipeline:
    """Gaze → fixations → heat map → new cells → lesions for one photograph.

    Parameters
    ----------
    session
        The photograph's :class:`ImageSession`.
    gaze_map
        Fixation detector and ROI tracker for this photograph.
    use_model
        Refine lesions with the model (when the engine has one).

    Attributes
    ----------
    busy
        Held while a fixation's ground is processed or refined, so a background
        :class:`~appliance.glance.preencode.PreEncoder` yields the CPU.
    """

    def __init__(self, session: ImageSession, gaze_map: GazeMap, use_model: bool = True) -> None:
        self.session = session
        self.gaze_map = gaze_map
        self.use_model = use_model
        self.busy = Busy()
        self._last_ns = 0
        self._queue: "queue.Queue[Optional[tuple]]" = queue.Queue()
        self._refiner: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self.stats = PipelineStats()
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    @classmethod
    def for_session(cls, session: ImageSession, px_per_deg: Optional[float] = None,
                    use_model: bool = True) -> "GlancePipeline":
        """Build with the configured fixation and heat-map settings."""
        gaze_map = GazeMap.from_config(session.config, session.photo.width, session.photo.height, px_per_deg)
        return cls(session, gaze_map, use_model)

    def subscribe(self, callback: Subscriber) -> None:
        """Deliver every later event to ``callback``, in order, from the pipeline's thread."""
        with self._lock:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        """Stop delivering to ``callback``."""
        with self._lock:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

    def _deliver(self, event: LesionEvent) -> None:
        self.stats.events += 1
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # a broken subscriber must not stop the reading
                logger.exception("lesion subscriber failed")

    def _process(self, grounds: list[NewGround], ended_ns: int) -> list[LesionEvent]:
        events: list[LesionEvent] = []
        for ground in grounds:
            start = time.perf_counter()
            self.stats.fixations += 1
            timing = FixationTiming(ground.fixation.index, 0, 0, None, 0.0, ended_ns)

            def on_event(event: LesionEvent, timing: FixationTiming = timing, start: float = start) -> None:
                if timing.first_at is None:
                    timing.first_at = time.perf_counter()
                    timing.first_ms = (timing.first_at - start) * 1e3
                self._deliver(event)

            cells = [self.session.cells.tile(r, c) for r, c in ground.cells]
            timing.cells = len(cells)
            with self.busy:
                pending = self.session.detect_cells(cells, lambda e: (events.append(e), on_event(e)))
            timing.lesions = sum(len(result.lesions) for _, _, result in pending)
            self.stats.cells += len(cells)
            self.stats.timings.append(timing)
            if self._refines and any(cands for _, cands, _ in pending):
                self._start_refiner()
                self._queue.put((pending, on_event, timing, start))
            else:
                timing.done_at = time.perf_counter()
                timing.done_ms = (timing.done_at - start) * 1e3
        return events

    @property
    def _refines(self) -> bool:
        return self.use_model and self.session.engine.predictor is not None

    def _start_refiner(self) -> None:
        if self._refiner is None:
            self._refiner = threading.Thread(target=self._refine_loop, name="glance-refine", daemon=True)
            self._refiner.start()

    def _refine_loop(self) -> None:
        """Stage 2 off the gaze thread: the encoder never delays the next fixation's lesions."""
        lower_this_thread()  # and at a lower CPU priority than the gaze thread
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._stop.is_set():
                    continue  # closing: work not started is dropped
                pending, on_event, timing, start = item
                with self.busy:
                    try:
                        self.session.refine(pending, on_event, self._stop)
                    except Cancelled:
                        continue
                    except Exception:  # the saliency lesions stand; the error is logged for support
                        logger.exception("model refinement failed")
                timing.done_at = time.perf_counter()
                timing.done_ms = (timing.done_at - start) * 1e3
            finally:
                self._queue.task_done()

    def wait_refined(self) -> None:
        """Block until the model has refined every cell processed so far."""
        self._queue.join()

    def close(self) -> None:
        """Stop the refinement thread at its next model tile, dropping the work not started.

        Call :meth:`flush` first to wait for it (batch gaze mode does). The live callers
        are a reader page that left and the server stopping: the refined masks would be
        shown to no one (the stored result holds the scan's own), and draining the queue
        held the page switch, or systemd's 30 s stop, for the encoder time of every queued
        fixation.
        """
        if self._refiner is not None:
            self._stop.set()
            self._queue.put(None)
            self._refiner.join(timeout=60)
            self._refiner = None

    def feed(self, sample: GazeSample) -> list[LesionEvent]:
        """Take one gaze sample; return the events of the fixations it ended."""
        self._last_ns = sample.timestamp_ns
        return self._process(self.gaze_map.feed(sample), sample.timestamp_ns)

    def feed_many(self, samples: Iterable[GazeSample]) -> list[LesionEvent]:
        """Take many samples; return their events in order."""
        events: list[LesionEvent] = []
        for sample in samples:
            events.extend(self.feed(sample))
        return events

    def tick(self, now_ns: int) -> list[LesionEvent]:
        """No sample by ``now_ns`` (blink, track loss): end a fixation that has gone quiet."""
        return self._process(self.gaze_map.tick(now_ns), now_ns)

    def flush(self) -> list[LesionEvent]:
        """End of the stream: close the last fixation, process its ground and wait for the model."""
        events = self._process(self.gaze_map.flush(), self._last_ns)
        self.wait_refined()
        return events

    def result(self) -> SegmentationResult:
        """The lesions so far, as a gaze-mode result.

        Scores weigh in the gaze of every fixation so far (:func:`rescore`), so they are
        final only once the reading has ended; the events delivered live carry the
        detector's scores.
        """
        result = self.session.result("gaze")
        result.lesions, calibration = rescore(
            result.lesions, self.gaze_map.fixations,
            GazeScoringParams(tracker_error_deg=self.session.config.gaze.tracker_error_deg),
            fov_area_px=float(self.session.fov.area_px))
        if calibration is not None:
            result.gaze_calibration = asdict(calibration)
        result.display_threshold = self.session.config.glance.gaze_display_threshold
        result.gaze_samples = dict(self.gaze_map.counters)
        return result


def segment_gaze(session: ImageSession, samples: Iterable[GazeSample], px_per_deg: Optional[float] = None,
                 use_model: bool = True) -> SegmentationResult:
    """Batch gaze mode: run a whole recording through the pipeline and return the result."""
    pipeline = GlancePipeline.for_session(session, px_per_deg, use_model)
    try:
        pipeline.feed_many(samples)
        pipeline.flush()
        return pipeline.result()
    finally:
        pipeline.close()


class LiveReader:
    """Runs a :class:`GlancePipeline` on a gaze source in a named background thread.

    Parameters
    ----------
    pipeline
        The photograph's pipeline.
    source
        Where gaze comes from (Neon, pointer, replay, simulated reader).
    poll_s
        How long one ``receive`` waits before the pipeline is ticked; a quiet source
        advances the pipeline's clock (the last sample's time) by this much per wait, times
        the source's :attr:`~appliance.gaze.base.GazeSource.speed`.
    """

    def __init__(self, pipeline: GlancePipeline, source: GazeSource, poll_s: float = 0.05) -> None:
        self.pipeline = pipeline
        self.source = source
        self.poll_s = poll_s
        self.error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._last_sample_ns: Optional[int] = None
        self._thread = threading.Thread(target=self._run, name=f"glance-{source.kind}", daemon=True)

    def start(self) -> "LiveReader":
        """Start reading; returns self."""
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                sample = self.source.receive(timeout_s=self.poll_s)
                if sample is not None:
                    self._last_sample_ns = sample.timestamp_ns
                    self.pipeline.feed(sample)
                    continue
                if self.source.finished:
                    self.pipeline.flush()
                    break
                if self._last_sample_ns is not None:
                    # Quiet source: advance the pipeline's clock by the stream time waited. Not
                    # the wall time: a replay at a quarter speed waits 4 poll_s between samples
                    # 1 poll_s apart, and the tick then ended every fixation at each sample.
                    self._last_sample_ns += int(self.poll_s * self.source.speed * 1e9)
                    self.pipeline.tick(self._last_sample_ns)
        except Exception as exc:  # reported to the UI; the reading itself is kept
            self.error = exc
            logger.exception("live glance pipeline stopped")

    @property
    def running(self) -> bool:
        """bool: True while the thread runs."""
        return self._thread.is_alive()

    def join(self, timeout_s: Optional[float] = None) -> None:
        """Wait for a finite source to be fully processed."""
        self._thread.join(timeout_s)

    def stop(self) -> None:
        """Stop reading and close the source."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.source.close()
        self.pipeline.close()
