"""Mouse or finger positions as a stand-in for gaze where no tracker is attached.

The UI pushes screen positions (``push``) from its request threads; the pipeline pulls
image-px samples (``receive``) from its own thread. Positions are mapped through the
view in force *when pushed*, so a zoom between push and receive cannot misplace them.
The queue is bounded: when the consumer stalls, the oldest samples are dropped and
counted, which keeps memory flat on a device that runs for days.

A pointer is not an eye: it rests without sending events. Call :meth:`PointerSource.lift`
(finger up, mouse leaves the image) to send a no-gaze sample that ends the fixation,
or let the pipeline call the fixation detector's ``tick`` when ``receive`` times out.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import Callable, Optional

from appliance.gaze.base import GazeSample, GazeSource, SourceStatus
from appliance.gaze.geometry import ViewTransform

logger = logging.getLogger(__name__)


class PointerSource(GazeSource):
    """Thread-safe queue of pointer positions converted to image-px gaze samples.

    Parameters
    ----------
    view
        The viewer's current transform (update it with :meth:`set_view`).
    screen_px_per_degree
        From the display geometry; sets each sample's ``px_per_deg``.
    maxlen
        Queue bound; the oldest samples are dropped beyond it.
    clock_ns
        Timestamp source for pushes without a timestamp.
    """

    kind = "pointer"

    def __init__(self, view: ViewTransform, screen_px_per_degree: float, maxlen: int = 4096,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        if maxlen <= 0:
            raise ValueError("The pointer queue length must be positive.")
        self._view = view
        self._screen_ppd = float(screen_px_per_degree)
        self._queue: deque[GazeSample] = deque()
        self._maxlen = maxlen
        self._cond = threading.Condition()
        self._clock_ns = clock_ns
        self._closed = False
        self.dropped = 0
        self.pushed = 0

    @property
    def view(self) -> ViewTransform:
        """ViewTransform: the transform applied to new pushes."""
        with self._cond:
            return self._view

    def set_view(self, view: ViewTransform) -> None:
        """Change the transform (the clinician zoomed or panned)."""
        with self._cond:
            self._view = view

    def _put(self, sample: GazeSample) -> None:
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self._maxlen:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(sample)
            self.pushed += 1
            self._cond.notify()

    def push(self, x_screen: float, y_screen: float, timestamp_ns: Optional[int] = None) -> None:
        """Add a pointer position in screen px (viewport origin top-left).

        A position outside the viewport becomes a no-gaze sample. Non-finite input is
        treated the same way, never raised on: the UI must not crash on a stray event.
        """
        t = self._clock_ns() if timestamp_ns is None else int(timestamp_ns)
        with self._cond:
            view = self._view
        ppd = view.image_px_per_deg(self._screen_ppd)
        try:
            xs, ys = float(x_screen), float(y_screen)
        except (TypeError, ValueError):
            xs = ys = math.nan
        if math.isfinite(xs) and math.isfinite(ys) and view.on_screen(xs, ys):
            xi, yi = view.screen_to_image(xs, ys)
            self._put(GazeSample(t, float(xi), float(yi), True, ppd))
        else:
            self._put(GazeSample(t, math.nan, math.nan, True, ppd))

    def lift(self, timestamp_ns: Optional[int] = None) -> None:
        """The finger lifted or the mouse left: push a no-gaze sample."""
        t = self._clock_ns() if timestamp_ns is None else int(timestamp_ns)
        with self._cond:
            view = self._view
        self._put(GazeSample(t, math.nan, math.nan, True, view.image_px_per_deg(self._screen_ppd)))

    def receive(self, timeout_s: Optional[float] = None) -> Optional[GazeSample]:
        """Return the oldest queued sample, waiting up to ``timeout_s`` (None: forever
        until a push or :meth:`close`)."""
        with self._cond:
            if not self._queue and not self._closed:
                self._cond.wait_for(lambda: self._queue or self._closed, timeout=timeout_s)
            return self._queue.popleft() if self._queue else None

    def status(self) -> SourceStatus:
        """Return queue figures for the UI."""
        with self._cond:
            return SourceStatus(kind=self.kind, connected=not self._closed,
                                detail={"queued": len(self._queue), "pushed": self.pushed,
                                        "dropped": self.dropped})

    def close(self) -> None:
        """Wake any waiting consumer; later pushes are ignored. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
