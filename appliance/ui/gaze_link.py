"""The reader's gaze sources: the pointer and the Neon, in screen px, through the page's view.

Both sources report *screen* px (the pointer from the browser, the Neon through the corner
markers), so the server, not the page, turns them into image px with the view the page posts
whenever it zooms, pans or resizes (:func:`view_from_page`): one transform for every source,
kept per open photograph as a :class:`~appliance.gaze.geometry.ViewTransform`.

A :class:`ReaderGaze` per open photograph holds that view, a
:class:`~appliance.gaze.pointer.PointerSource` (the browser pushes finger / mouse positions into
it) and, when ``[gaze] source = "neon"``, a Neon source whose
:class:`~appliance.gaze.screen_mapping.GazeToImageMapper` gets every new view. One feeder
thread per source drains it into the photograph's :class:`~appliance.ui.live.LiveSession`, as
:class:`appliance.glance.live.LiveReader` does for a pipeline; the session's ticker ends a
fixation when the stream goes quiet. Only one photograph holds the Neon at a time: opening
another closes the previous photograph's link.

With ``[tracker] recording_enabled`` (research studies; off by default) each photograph's
Neon link is also one Companion recording, holding the events ``image_shown:ID``, the
clinician's ``lesion_accepted|rejected|added:LESION`` and ``image_closed:ID``
(:class:`~appliance.gaze.neon_recording.NeonRecording`): a recording exported from Pupil
Cloud is then the reading of one photograph, and its events line up with the appliance's
decisions. A thread of the link talks to the phone, so a slow or refusing Companion never
holds a reading or a request.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import Any, Callable, Optional

from appliance.config import Config
from appliance.gaze.base import GazeSource, SourceStatus
from appliance.gaze.geometry import ViewTransform, screen_px_per_deg
from appliance.gaze.pointer import PointerSource

logger = logging.getLogger(__name__)

#: How long a feeder waits for a sample before checking whether it must stop, s.
FEED_POLL_S = 0.05
#: The Neon's samples are set aside this long after the last pointer position, s: a clinician
#: who switches the pointer on is pointing, and two gaze streams would break fixation detection.
POINTER_HOLD_S = 1.0
#: Largest view value accepted from the page (px, scale): anything beyond is a bad request.
MAX_VIEW_VALUE = 1e6


def view_from_page(image_width: int, image_height: int, body: dict[str, Any]) -> ViewTransform:
    """Build the view from what the reader page posts.

    The page draws image point ``p`` at screen px ``(left + tx + p.x * scale,
    top + ty + p.y * scale)`` in a viewport ``width`` x ``height`` px whose top-left corner is
    ``(left, top)`` on the screen. The returned transform maps exactly the same way.

    Raises
    ------
    ValueError
        If a value is missing, not a finite number, out of range, or the scale is not positive.
    """
    try:
        scale, tx, ty = (float(body[k]) for k in ("scale", "tx", "ty"))
        width, height = (float(body[k]) for k in ("width", "height"))
        left, top = float(body.get("left", 0.0)), float(body.get("top", 0.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"Malformed view: {exc}") from None
    values = (scale, tx, ty, width, height, left, top)
    if not all(math.isfinite(v) and abs(v) <= MAX_VIEW_VALUE for v in values):
        raise ValueError("View values must be finite numbers of a sane size.")
    if scale <= 0 or width < 1 or height < 1:
        raise ValueError("The view's scale and viewport size must be positive.")
    w, h = int(round(width)), int(round(height))
    fit = min(w / image_width, h / image_height)
    return ViewTransform(image_width, image_height, w, h, zoom=scale / fit,
                         center_x=(w / 2.0 - tx) / scale, center_y=(h / 2.0 - ty) / scale,
                         offset_x=left, offset_y=top)


class _Feeder:
    """A named thread that drains one gaze source into a sample sink until stopped."""

    def __init__(self, source: GazeSource, sink: Callable[[Any], Any], name: str) -> None:
        self.source = source
        self._sink = sink
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sample = self.source.receive(FEED_POLL_S)
            except Exception:  # a broken source must not take the reader down
                logger.exception("gaze source %s failed; feeding stopped", self.source.kind)
                return
            if sample is not None and not self._stop.is_set():
                try:
                    self._sink(sample)
                except Exception:
                    logger.exception("the glance pipeline failed on a gaze sample")

    def stop(self) -> None:
        """Close the source and join the thread."""
        self._stop.set()
        self.source.close()
        self._thread.join(timeout=5)


class ReaderGaze:
    """The gaze of one open photograph: its current view, the pointer and optionally the Neon.

    Parameters
    ----------
    config
        The appliance configuration (``[display]``, ``[gaze]``, ``[tracker]``).
    image_width, image_height
        The photograph's size in image px.
    push
        ``GazeSample -> Any``: the photograph's :meth:`LiveSession.push`.
    neon_factory
        ``(config, mapper) -> GazeSource``: builds the Neon source; None uses
        :func:`appliance.gaze.sources.build_source`. Tests pass it to count builds.
    label
        The photograph's appliance record number, for the recording's events.
    """

    def __init__(self, config: Config, image_width: int, image_height: int, push: Callable[[Any], Any],
                 neon_factory: Optional[Callable[[Config, Any], GazeSource]] = None, label: str = "") -> None:
        self.config = config
        self.label = label
        self._events: "queue.Queue[Optional[tuple[str, str]]]" = queue.Queue()
        self._recorder: Optional[threading.Thread] = None
        self.image_size = (int(image_width), int(image_height))
        self._push = push
        self._lock = threading.Lock()
        self.screen_ppd = screen_px_per_deg(config.display)
        self.view = ViewTransform.fitted(image_width, image_height, config.display)
        self.pointer = PointerSource(self.view, self.screen_ppd, maxlen=config.gaze.pointer_queue_size)
        #: True while a replayed recording owns the pipeline: live gaze (pointer and Neon) is set
        #: aside, since its clock interleaved with the recording's ends every fixation as a jump
        self.replaying: Callable[[], bool] = lambda: False
        #: the Neon's accuracy check in progress (:mod:`appliance.ui.gaze_check`), or None
        self.check: Any = None
        self._feeders = [_Feeder(self.pointer, self._push_pointer, "gaze-pointer")]
        self.mapper: Any = None
        self.neon: Optional[GazeSource] = None
        self.closed = False
        #: the reader pages reading this photograph now (their tokens): closed with the last
        self.pages: set[str] = set()
        self._pointer_at = -math.inf  # time.monotonic() of the latest pointer position
        if config.gaze.source == "neon":
            try:
                self._open_neon(neon_factory)
            except Exception:  # the pointer still works; the badge shows the Neon missing
                logger.exception("the Neon gaze source could not be opened")

    def _open_neon(self, factory: Optional[Callable[[Config, Any], GazeSource]]) -> None:
        from appliance.gaze.screen_mapping import INVISIBLE_SCENE_CAMERA, GazeToImageMapper, ScreenMapper, screen_markers

        d, t = self.config.display, self.config.tracker
        markers = screen_markers(d.width_px, d.height_px, t.marker_size_px, t.marker_margin_px)
        # The camera is a placeholder: the Neon source loads the device's own calibration
        # (Neon's /calibration.bin, Invisible's published intrinsics) before gaze flows.
        screen = ScreenMapper(INVISIBLE_SCENE_CAMERA, markers, max_frame_gap_ns=int(t.max_frame_gap_ms * 1e6))
        self.mapper = GazeToImageMapper(screen, view=self.view, screen_px_per_deg=self.screen_ppd)
        if factory is None:
            from appliance.gaze.sources import build_source

            self.neon = build_source(self.config, "neon", to_image=self.mapper, frame_sink=screen.add_frame)
        else:
            self.neon = factory(self.config, self.mapper)
        self._feeders.append(_Feeder(self.neon, self._push_neon, "gaze-neon"))
        if self.config.tracker.recording_enabled and hasattr(self.neon, "run_on_device"):
            self._recorder = threading.Thread(target=self._record, name="neon-recording", daemon=True)
            self._recorder.start()

    def _record(self) -> None:
        """One Companion recording for this photograph: started once the Neon is connected,
        then the queued events in order, then ``image_closed`` and stop at :meth:`close`."""
        from appliance.errors import GazeError
        from appliance.gaze.neon_recording import NeonRecording

        assert self.neon is not None
        recording = NeonRecording(self.neon)  # type: ignore[arg-type]
        try:
            while not self.neon.status().connected:
                if self.closed:
                    return
                time.sleep(FEED_POLL_S)
            recording.start()
            recording.event("image_shown", self.label)
            while True:
                item = self._events.get()
                if item is None:
                    break
                recording.event(*item)
            recording.event("image_closed", self.label)
            recording.stop()
        except (GazeError, ValueError) as exc:  # research data lost, the reading goes on
            logger.warning("Companion recording of image %s stopped: %s", self.label, exc)

    def record_event(self, name: str, detail: str) -> None:
        """Queue a recording event (a lesion decision); nothing happens without a recording."""
        if self._recorder is not None and not self.closed:
            self._events.put((name, detail))

    def _push_pointer(self, sample: Any) -> Any:
        if self.replaying():
            return None
        return self._push(sample)

    def _push_neon(self, sample: Any) -> Any:
        if time.monotonic() - self._pointer_at < POINTER_HOLD_S or self.replaying() or self.check is not None:
            return None  # a fixation on a check's target is not a look at the photograph
        return self._push(sample)

    def set_view(self, view: ViewTransform) -> None:
        """The page zoomed, panned or resized: every source maps through ``view`` from now on."""
        with self._lock:
            self.view = view
            self.pointer.set_view(view)
            if self.mapper is not None:
                self.mapper.view = view  # GazeToImageMapper reads it per sample; the view is frozen

    def pointer_at(self, x_screen: float, y_screen: float, timestamp_ns: int) -> None:
        """A pointer / finger position in screen px (outside the viewport: no gaze)."""
        self._pointer_at = time.monotonic()
        self.pointer.push(x_screen, y_screen, timestamp_ns)

    def pointer_gone(self, timestamp_ns: int) -> None:
        """The pointer left the photograph or the finger lifted: a no-gaze sample."""
        self._pointer_at = time.monotonic()
        self.pointer.lift(timestamp_ns)

    def start_check(self) -> Any:
        """Start the Neon's accuracy check (:func:`appliance.ui.gaze_check.start_check`).

        Raises
        ------
        ValueError
            If this photograph's link has no Neon.
        """
        from appliance.ui.gaze_check import start_check

        if self.mapper is None:
            raise ValueError("No eye tracker is open on this photograph.")
        self.check = start_check(self.mapper, self.config.display, self.screen_ppd)
        return self.check

    def finish_check(self) -> Any:
        """Measure the check started last; its correction applies from now on when it passed.

        Raises
        ------
        ValueError
            If no check was started.
        """
        from appliance.ui.gaze_check import finish_check

        check = self.check
        if check is None:
            raise ValueError("No gaze check was started.")
        try:
            return finish_check(check)  # waits for the last target: its gaze stays out of the pipeline
        finally:
            self.check = None

    def status(self) -> Optional[SourceStatus]:
        """The Neon's status (connected, battery) while it is open; None without a Neon."""
        return self.neon.status() if self.neon is not None else None

    def close(self) -> None:
        """Stop feeding and close every source (the Neon connection included). Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._recorder is not None:  # its last events go out before the Neon connection closes
            self._events.put(None)
            self._recorder.join(timeout=4 * self.config.tracker.request_timeout_s)
        for feeder in self._feeders:
            feeder.stop()
        logger.info("reader gaze closed (%s)", ", ".join(f.source.kind for f in self._feeders))


class GazeLinks:
    """Every open photograph's :class:`ReaderGaze`; at most one holds the Neon.

    Parameters
    ----------
    config
        The appliance configuration.
    neon_factory
        Passed to each :class:`ReaderGaze`.
    """

    def __init__(self, config: Config, neon_factory: Optional[Callable[[Config, Any], GazeSource]] = None) -> None:
        self.config = config
        self.neon_factory = neon_factory
        self.links: dict[int, ReaderGaze] = {}
        self._lock = threading.Lock()

    def open(self, image_id: int, image_width: int, image_height: int, push: Callable[[Any], Any],
             page: Optional[str] = None) -> ReaderGaze:
        """Return the link of ``image_id``, opening it (and closing another's Neon) if needed.

        ``page`` is the token of the reader page that opened it (see :meth:`close_one`).
        """
        with self._lock:
            link = self.links.get(image_id)
            if link is not None and not link.closed:
                if page is not None:
                    link.pages.add(page)
                return link
            if self.config.gaze.source == "neon":  # one wearer, one screen: one Neon session
                for other_id in [i for i, l in self.links.items() if l.neon is not None]:
                    self.links.pop(other_id).close()
            link = ReaderGaze(self.config, image_width, image_height, push, self.neon_factory, label=str(image_id))
            if page is not None:
                link.pages.add(page)
            self.links[image_id] = link
            return link

    def get(self, image_id: int) -> Optional[ReaderGaze]:
        """The open link of ``image_id``, or None."""
        with self._lock:
            link = self.links.get(image_id)
            return link if link is not None and not link.closed else None

    def close_one(self, image_id: int, page: Optional[str] = None) -> bool:
        """Close the link of ``image_id`` (a reader page closed); True when it was closed.

        With ``page``, only that page leaves: the link (the Neon connection) stays while
        another page opened on it still reads, a second tab or the page a reload just loaded
        (the old copy unloads after the new one opened). Closing it then left that page
        without gaze and its badge reading "not connected" until the next zoom or pan.
        """
        with self._lock:
            link = self.links.get(image_id)
            if link is None:
                return False
            if page is not None:
                link.pages.discard(page)
                if link.pages:
                    logger.info("reader page left; %d still reading the photograph", len(link.pages))
                    return False
            self.links.pop(image_id)
        link.close()
        return True

    def record_event(self, image_id: int, name: str, detail: str) -> None:
        """Queue a Companion recording event on ``image_id``'s link (see the module docstring)."""
        link = self.get(image_id)
        if link is not None:
            link.record_event(name, detail)

    def neon_status(self) -> Optional[SourceStatus]:
        """The open Neon's status, or None when no photograph holds one."""
        with self._lock:
            links = list(self.links.values())
        for link in links:
            status = link.status()
            if status is not None:
                return status
        return None

    def close(self) -> None:
        """Close every link (server shutdown)."""
        with self._lock:
            links, self.links = list(self.links.values()), {}
        for link in links:
            link.close()
