"""Imported photographs analysed in the background, then stored as studies.

Import must answer the technician at once, but a scan-mode segmentation of a full photograph
takes seconds to minutes (more with the model). So an import only validates the photograph
(``load_photograph``) and queues a job; one named worker thread runs
``segment_photograph`` (scan mode) and then ``Store.add_study(photo, patient, eye, result)``,
which queues the automatic, not-yet-reviewed result for sync. The worklist shows the jobs
still waiting or running (and any that failed) above the stored studies.

The queue is kept on disk (``<data_dir>/import-queue``): the technician was told "imported"
and may have wiped the camera card or taken the stick away, so a photograph whose analysis had
not finished when the appliance stopped (shut down at the end of the day, a power cut) is
analysed at the next start instead of being lost. Each queued import is its file's bytes and
a small JSON beside them, written durably before the import is acknowledged and removed once
the study is stored (or its analysis failed, which the worklist shows).
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from appliance.errors import ApplianceError, Cancelled
from appliance.store import files

logger = logging.getLogger(__name__)

#: Finished or failed jobs kept for the worklist, newest last.
KEEP_FINISHED = 50
#: Seconds ``close`` waits for the photograph under analysis to stop (systemd stops the
#: service after 30 s). The scan stops at its next detection band or model tile (about a
#: second); a job cut short is analysed again at the next start.
CLOSE_WAIT_S = 20.0


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
    #: Its entry in the on-disk queue (None: not kept, e.g. no spool folder).
    key: Optional[str] = field(default=None, repr=False)


class AnalysisQueue:
    """A small in-memory job queue with one worker thread.

    Parameters
    ----------
    store
        The :class:`appliance.store.Store` the results go to.
    engine
        ``() -> GlanceEngine``: the process's engine (built on first use).
    segment
        ``(photo, engine, stop=threading.Event) -> SegmentationResult``; default
        :func:`appliance.glance.scan.segment_photograph` (scan mode), which ends with
        :class:`Cancelled` soon after ``stop`` is set.
    on_stored
        Called with each finished job (the audit log, tests).
    spool
        Folder of the on-disk queue (see the module docstring); None keeps jobs in memory only.
    """

    def __init__(self, store: Any, engine: Callable[[], Any], segment: Optional[Callable[..., Any]] = None,
                 on_stored: Optional[Callable[[AnalysisJob], None]] = None, spool: Optional[Path] = None) -> None:
        self.store = store
        self.engine = engine
        self.segment = segment
        self.on_stored = on_stored
        self.spool = None if spool is None else Path(spool)
        self._stop = threading.Event()
        self._jobs: dict[int, AnalysisJob] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: "queue.Queue[Optional[AnalysisJob]]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None

    def submit(self, photo: Any, patient_id: str, eye: str, name: str, raw: Optional[bytes] = None) -> AnalysisJob:
        """Queue a validated photograph (an ``appliance.imaging.io.Photograph``) for analysis.

        ``raw``, the file's bytes, is kept in the spool first, so the import survives a stop.

        Raises
        ------
        StoreError
            If the spool cannot be written (disk full): the import is refused, not half taken.
        """
        key = self._keep(raw, patient_id, eye, name) if raw is not None and self.spool is not None else None
        return self._enqueue(photo, patient_id, eye, name, key)

    def _keep(self, raw: bytes, patient_id: str, eye: str, name: str) -> str:
        assert self.spool is not None
        key = f"{time.time_ns():020d}-{next(self._ids):06d}"
        files.atomic_write(self.spool / f"{key}.photo", raw)
        meta = {"patient_id": patient_id, "eye": eye, "name": name}
        files.atomic_write(self.spool / f"{key}.json", json.dumps(meta).encode())  # last: marks it complete
        return key

    def _forget(self, key: Optional[str]) -> None:
        if key is None or self.spool is None:
            return
        for suffix in (".json", ".photo"):
            try:
                files.remove_durable(self.spool / f"{key}{suffix}")
            except OSError as exc:
                logger.warning("could not remove %s%s from the import queue: %s", key, suffix, exc)

    def resume(self, load: Callable[[bytes, str], Any]) -> int:
        """Queue again the imports a stop left unanalysed; return how many.

        ``load(raw, name)`` decodes a kept file as the import did. An entry already stored (the
        stop came between storing the study and removing the entry) is removed, not stored
        twice; one that cannot be read back is logged and left in place for the technician.
        """
        if self.spool is None or not self.spool.is_dir():
            return 0
        complete = {p.stem for p in self.spool.glob("*.json")}
        for orphan in self.spool.glob("*.photo"):
            if orphan.stem not in complete:  # cut before its JSON: the import was never acknowledged
                files.remove_durable(orphan)
        queued = 0
        for key in sorted(complete):
            name = ""
            try:
                meta = json.loads((self.spool / f"{key}.json").read_text())
                patient_id, eye, name = str(meta["patient_id"]), str(meta["eye"]), str(meta["name"])
                photo = load((self.spool / f"{key}.photo").read_bytes(), name)
            except (OSError, ValueError, KeyError, TypeError, ApplianceError) as exc:
                # The refusal names the file, which may be named after the patient: not in the log.
                reason = str(exc).replace(name, "the photograph") if name else str(exc)
                logger.error("a queued import (%s) cannot be read back: %s; it stays in %s", key, reason, self.spool)
                continue
            earlier = self.store.study_of_source(photo.sha256)
            if earlier is not None and (earlier.patient_id, earlier.eye) == (patient_id, eye):
                self._forget(key)
                continue
            self._enqueue(photo, patient_id, eye, name, key)
            queued += 1
        if queued:
            logger.info("%d import(s) left unanalysed at the last stop queued again", queued)
        return queued

    def _enqueue(self, photo: Any, patient_id: str, eye: str, name: str, key: Optional[str]) -> AnalysisJob:
        with self._lock:
            job = AnalysisJob(next(self._ids), patient_id, eye, name, photo, key=key)
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
        """Stop the worker, cutting the job in flight short (waiting up to :data:`CLOSE_WAIT_S`).

        Jobs not started, and the one cut short, stay in the spool for the next start. The
        scan is stopped rather than waited for: a whole photograph can take longer than
        systemd's stop timeout, and an encoder run still going when the interpreter exits
        aborts the process (exit 134).
        """
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=CLOSE_WAIT_S)
            if self._thread.is_alive():
                logger.warning("stopping during an analysis; it runs again at the next start")

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None or self._stop.is_set():
                return
            with self._lock:
                job.state = "analysing"
            start = time.perf_counter()
            try:
                segment = self.segment
                if segment is None:
                    from appliance.glance.scan import segment_photograph as segment
                result = segment(job.photo, self.engine(), stop=self._stop)
                study = self.store.add_study(job.photo, job.patient_id, job.eye, result, gaze_summary=None)
            except Cancelled:
                logger.info("analysis of job %d stopped with the appliance; it runs again at the next start", job.id)
                return
            except Exception as exc:  # noqa: BLE001 - any failure is shown on the worklist, the worker goes on
                logger.exception("analysis of job %d failed", job.id)
                with self._lock:
                    job.state, job.error = "failed", f"{exc}"
                    job.photo = None
                    self._idle.notify_all()
                if not self._stop.is_set():  # a failure because the appliance is stopping is retried at start
                    self._forget(job.key)  # the worklist says it failed; the technician imports it again
                continue
            self._forget(job.key)  # stored: the study holds the photograph now
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
