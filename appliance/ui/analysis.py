"""Imported photographs analysed in the background, then stored as studies.

Import must answer the technician at once, but a scan-mode segmentation of a full photograph
takes seconds to minutes (more with the model). So an import only validates the photograph
(``load_photograph``) and queues a job; one named worker thread runs
``segment_photograph`` (scan mode) and then ``Store.add_study(photo, patient, eye, result)``,
which queues the automatic, not-yet-reviewed result for sync. The worklist shows the jobs
still waiting or running (and any that failed) above the stored studies.

The queue lives in memory: a photograph whose job had not finished when the appliance stopped
was never stored, and the technician imports it again (the worklist said "analysing").
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)

#: Finished or failed jobs kept for the worklist, newest last.
KEEP_FINISHED = 50


@dataclass
class AnalysisJob:
    """One photograph waiting for, under, or past analysis.

    Attributes
    ----------
    id
        Job number, unique in the process.
    patient_id, eye, name
        What the worklist shows while the study does not exist yet.
    state
        ``"queued"``, ``"analysing"``, ``"stored"`` or ``"failed"``.
    study_id
        The stored study once ``state == "stored"``.
    error
        A sentence for the technician when ``state == "failed"``.
    """

    id: int
    patient_id: str
    eye: str
    name: str
    photo: Any = field(repr=False)
    state: str = "queued"
    study_id: Optional[int] = None
    gradable: Optional[bool] = None
    error: str = ""
    seconds: Optional[float] = None


class AnalysisQueue:
    """A small in-memory job queue with one worker thread.

    Parameters
    ----------
    store
        The :class:`appliance.store.Store` the results go to.
    engine
        ``() -> GlanceEngine``: the process's engine (built on first use).
    segment
        ``(photo, engine) -> SegmentationResult``; default
        :func:`appliance.glance.scan.segment_photograph` (scan mode).
    on_stored
        Called with each finished job (the audit log, tests).
    """

    def __init__(self, store: Any, engine: Callable[[], Any], segment: Optional[Callable[..., Any]] = None,
                 on_stored: Optional[Callable[[AnalysisJob], None]] = None) -> None:
        self.store = store
        self.engine = engine
        self.segment = segment
        self.on_stored = on_stored
        self._jobs: dict[int, AnalysisJob] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: "queue.Queue[Optional[AnalysisJob]]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None

    def submit(self, photo: Any, patient_id: str, eye: str, name: str) -> AnalysisJob:
        """Queue a validated photograph (an ``appliance.imaging.io.Photograph``) for analysis."""
        with self._lock:
            job = AnalysisJob(next(self._ids), patient_id, eye, name, photo)
            self._jobs[job.id] = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ui-analysis", daemon=True)
                self._thread.start()
        self._queue.put(job)
        logger.info("photograph queued for analysis (job %d)", job.id)
        return job

    def jobs(self) -> list[AnalysisJob]:
        """Return the jobs not stored yet (queued, analysing, failed), oldest first."""
        with self._lock:
            return [j for j in self._jobs.values() if j.state != "stored"]

    def get(self, job_id: int) -> Optional[AnalysisJob]:
        """Return one job, or None."""
        with self._lock:
            return self._jobs.get(job_id)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no job is queued or running; True when idle in time."""
        end = time.monotonic() + timeout_s
        with self._idle:
            while any(j.state in ("queued", "analysing") for j in self._jobs.values()):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        """Stop the worker after the job in flight."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                job.state = "analysing"
            start = time.perf_counter()
            try:
                segment = self.segment
                if segment is None:
                    from appliance.glance.scan import segment_photograph as segment
                result = segment(job.photo, self.engine())
                study = self.store.add_study(job.photo, job.patient_id, job.eye, result, gaze_summary=None)
            except Exception as exc:  # noqa: BLE001 - any failure is shown on the worklist, the worker goes on
                logger.exception("analysis of job %d failed", job.id)
                with self._lock:
                    job.state, job.error = "failed", f"{exc}"
                    job.photo = None
                    self._idle.notify_all()
                continue
            with self._lock:
                job.state, job.study_id, job.gradable = "stored", study.id, bool(result.gradable)
                job.seconds = time.perf_counter() - start
                job.photo = None  # the pixels now live in the store
                done = [j for j in self._jobs.values() if j.state == "stored"]
                for old in done[:-KEEP_FINISHED]:
                    del self._jobs[old.id]
                self._idle.notify_all()
            logger.info("job %d analysed in %.1f s: study %d", job.id, job.seconds, study.id)
            if self.on_stored is not None:
                try:
                    self.on_stored(job)
                except Exception:  # noqa: BLE001 - a listener must not stop the worker
                    logger.exception("analysis listener failed")
