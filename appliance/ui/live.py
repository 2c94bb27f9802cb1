"""Live reader sessions: gaze in, lesion events out to every browser watching the photograph.

One :class:`LiveSession` per open photograph holds the glance session and a list of subscriber
queues (one per server-sent-events connection). Gaze arrives from the pointer route or from a
replay thread; whatever thread pushes a sample runs the pipeline step, and each lesion event is
fanned out the moment the pipeline emits it (saliency lesions before the model refines them). A
ticker thread ends the fixation of a stream gone quiet. Only lesions at or above the display
threshold are shown, under the id the stored automatic result gives them (the resolver).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from appliance.gaze.base import GazeSample
from appliance.gaze.replay import replay_offsets_s
from appliance.glance.lesions import Lesion
from appliance.ui.services import LesionEvent, LiveGlance

logger = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 1000
#: Photographs whose shown lesions are remembered after their session closed (a reader who
#: goes back to one sees what its gaze brought up before).
KEPT_SHOWN = 64
#: How often a quiet gaze stream is checked, s: a fixation ends this long (plus the detector's
#: gap) after the gaze left, without waiting for the next sample.
TICK_S = 0.025


def lesion_payload(lesion: Lesion) -> dict[str, Any]:
    """The lesion as JSON for the browser: the lesions.json fields plus a contour polygon."""
    out = lesion.to_json()
    if lesion.mask is not None and lesion.mask.any():
        import cv2

        contours, _ = cv2.findContours(lesion.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if contours:
            c = max(contours, key=cv2.contourArea).reshape(-1, 2)
            out["contour"] = [[int(x + lesion.bbox[0]), int(y + lesion.bbox[1])] for x, y in c]
    return out


class LiveSession:
    """The live state of one photograph.

    Parameters
    ----------
    image_id
        The photograph's id.
    glance
        The pipeline session.
    resolve
        ``(image_id, lesion) -> lesion id or None``: the id the store knows the lesion by. The
        live pipeline's ids equal the stored automatic scan's (cell grid + content); an id the
        store lacks is recorded as an added lesion and its new id returned.
    threshold
        Only lesions scoring at least this are shown (``[glance] display_threshold``).
    """

    def __init__(self, image_id: int, glance: LiveGlance, resolve: Callable[[int, Lesion], Optional[int]],
                 threshold: float) -> None:
        self.image_id = image_id
        self.glance = glance
        self.resolve = resolve
        self.threshold = threshold
        self.lock = threading.Lock()  # the pipeline: one step at a time
        self._subs_lock = threading.Lock()  # lock order: lock -> _pub_lock -> _subs_lock
        self.subscribers: list[queue.Queue] = []
        self.replay_thread: Optional[threading.Thread] = None
        self.replay_stop = threading.Event()
        self.source = "pointer"
        #: lesion payloads shown so far (a page opened later draws them at once), by store id
        self.shown: dict[int, dict[str, Any]] = {}
        self._ids: dict[int, Optional[int]] = {}
        self._pub_lock = threading.Lock()
        self._last_ns: Optional[int] = None  # stream time of the latest sample
        self._last_at = 0.0  # time.monotonic() when it arrived
        self._speed = 1.0  # stream seconds per wall second of what feeds it (a replay's speed)
        self._closed = threading.Event()
        self._ticker: Optional[threading.Thread] = None
        set_sink = getattr(glance, "set_sink", None)
        if set_sink is not None:  # events as they happen, not when the whole fixation is done
            set_sink(self._publish_events)

    def subscribe(self) -> queue.Queue:
        """Return a queue that receives every event from now on."""
        q: queue.Queue = queue.Queue(maxsize=SUBSCRIBER_QUEUE)
        with self._subs_lock:
            self.subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        """Stop delivering to ``q``."""
        with self._subs_lock:
            if q in self.subscribers:
                self.subscribers.remove(q)

    def publish(self, event: dict[str, Any]) -> None:
        """Send one event to every subscriber; a full queue (a stalled browser) drops it."""
        with self._subs_lock:
            subs = list(self.subscribers)
        for q in subs:
            try:
                q.put_nowait(event)
            except queue.Full:
                logger.warning("a reader connection is not keeping up; event dropped")

    def push(self, sample: GazeSample) -> int:
        """Run one sample through the pipeline; return how many lesion events it returned
        (events delivered through the glance's sink as they happen are not counted)."""
        with self.lock:
            events: list[LesionEvent] = self.glance.push(sample)
            self._last_ns, self._last_at = sample.timestamp_ns, time.monotonic()
            if self._ticker is None:
                self._ticker = threading.Thread(target=self._tick_loop, name=f"gaze-tick-{self.image_id}", daemon=True)
                self._ticker.start()
        if sample.has_gaze:
            self.publish({"type": "gaze", "x": round(sample.x, 1), "y": round(sample.y, 1)})
        self._publish_events(events)
        return len(events)

    def _tick_loop(self) -> None:
        """A quiet stream (the gaze left the photograph, a blink, a lost tracker) still ends its
        fixation: advance the pipeline's clock by the time waited, as LiveReader does."""
        tick = getattr(self.glance, "tick", None)
        if tick is None:
            return
        while not self._closed.wait(TICK_S):
            with self.lock:
                if self._last_ns is None or time.monotonic() - self._last_at < TICK_S:
                    continue
                # Stream time, not wall time: a replay at a quarter speed waits 4x longer between
                # samples, and ticking by the wall ended its fixations at every sample.
                events = tick(self._last_ns + int((time.monotonic() - self._last_at) * self._speed * 1e9))
            self._publish_events(events)

    def _publish_events(self, events: list[Any]) -> None:
        with self._pub_lock:
            self._publish_locked(events)

    def _publish_locked(self, events: list[Any]) -> None:
        for ev in events:
            lesion = ev.lesion
            if lesion.id not in self._ids:
                if lesion.score < self.threshold:
                    continue  # not shown: nothing to resolve
                self._ids[lesion.id] = self.resolve(self.image_id, lesion)
            store_id = self._ids[lesion.id]
            if store_id is None:
                continue
            if lesion.score < self.threshold and store_id not in self.shown:
                continue  # never shown; an update below the threshold of a shown lesion hides it
            payload = lesion_payload(lesion)
            payload["id"] = store_id
            self.shown[store_id] = payload
            fixation_wall_ns = getattr(ev, "fixation_wall_ns", None) or time.time_ns()
            self.publish({"type": "lesion", "kind": ev.kind, "lesion": payload,
                          "fixation_wall_ms": fixation_wall_ns / 1e6, "sent_wall_ms": time.time_ns() / 1e6})

    def flush(self) -> int:
        """End of a stream: let the pipeline close its last fixation (when it can)."""
        flush = getattr(self.glance, "flush", None)
        if flush is None:
            return 0
        with self.lock:
            events = flush()
        self._publish_events(events)
        return len(events)

    def prompt(self, x: float, y: float) -> Optional[Lesion]:
        """Prompt the model at an image point; return its lesion, or None (no model, empty mask)."""
        with self.lock:
            return self.glance.prompt(x, y)

    def start_replay(self, samples: list[GazeSample], speed: float = 1.0) -> None:
        """Feed a recording in its own timing (``speed`` × real time) on a named thread."""
        self.stop_replay()
        self.replay_stop = threading.Event()
        stop = self.replay_stop
        self.source = "replay"

        offsets_s = replay_offsets_s(samples)  # a clock jump in the recording is not waited for
        # Faster than real time the wall clock is not scaled up: a replay thread late by a few ms
        # would then look like a gap of ten times that, ending a fixation too early.
        self._speed = min(speed, 1.0)

        def run() -> None:
            start_wall = time.monotonic()
            for s, offset_s in zip(samples, offsets_s):
                due = offset_s / speed
                delay = due - (time.monotonic() - start_wall)
                if delay > 0 and stop.wait(delay):
                    return
                if stop.is_set():
                    return
                self.push(s)
            self.flush()
            self._speed = 1.0
            self.publish({"type": "replay_done"})
            logger.info("gaze replay finished (%d samples)", len(samples))

        self.replay_thread = threading.Thread(target=run, name=f"gaze-replay-{self.image_id}", daemon=True)
        self.replay_thread.start()

    def stop_replay(self) -> None:
        """Stop a running replay, if any."""
        self.replay_stop.set()
        if self.replay_thread is not None:
            self.replay_thread.join(timeout=5)
            self.replay_thread = None
        self._speed = 1.0

    def close(self) -> None:
        """Stop the replay and the ticker, and release the pipeline session."""
        self.stop_replay()
        self._closed.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        self.glance.close()


class LiveHub:
    """All live sessions of the server, created on first use per photograph.

    Parameters
    ----------
    live_factory
        ``photo -> LiveGlance``.
    resolve
        See :class:`LiveSession`.
    threshold
        See :class:`LiveSession`.
    """

    def __init__(self, live_factory: Callable[[Any], LiveGlance],
                 resolve: Callable[[int, Lesion], Optional[int]], threshold: float) -> None:
        self.live_factory = live_factory
        self.resolve = resolve
        self.threshold = threshold
        self.sessions: dict[int, LiveSession] = {}
        self.lock = threading.Lock()
        #: shown lesions and their store ids of closed sessions, newest last
        self._kept: "collections.OrderedDict[int, tuple[dict, dict]]" = collections.OrderedDict()
        #: the photographs' gaze sources (``appliance.ui.gaze_link.GazeLinks``), closed first
        self.gaze: Any = None

    def get(self, image_id: int, photo_loader: Callable[[], Any]) -> LiveSession:
        """Return the session of ``image_id``, opening it (loading the photograph) if needed."""
        with self.lock:
            session = self.sessions.get(image_id)
            if session is None:
                session = LiveSession(image_id, self.live_factory(photo_loader()), self.resolve, self.threshold)
                kept = self._kept.pop(image_id, None)
                if kept is not None:
                    session.shown.update(kept[0])
                    session._ids.update(kept[1])
                self.sessions[image_id] = session
            return session

    def close_session(self, image_id: int) -> bool:
        """The last reader page of ``image_id`` left: stop its pipeline and background work.

        Why: a session used to live until the server stopped, so the photograph read before
        kept pre-encoding its tiles (on the 2 cores the next photograph's fixations need, and
        into the embedding cache the two share) and its threads and embeddings accumulated all
        day. The lesions it showed are kept for when the reader comes back to it.

        Returns
        -------
        bool
            True when a session was open.
        """
        with self.lock:
            session = self.sessions.pop(image_id, None)
            if session is None:
                return False
            self._kept[image_id] = (dict(session.shown), dict(session._ids))
            while len(self._kept) > KEPT_SHOWN:
                self._kept.popitem(last=False)
        session.close()
        logger.info("live session of image %d closed", image_id)
        return True

    def close(self) -> None:
        """Close every gaze source, then every session (server shutdown)."""
        if self.gaze is not None:
            self.gaze.close()
        with self.lock:
            for s in self.sessions.values():
                s.close()
            self.sessions.clear()


class StreamSlots:
    """Bounds the reader pages' event streams, each of which holds a server thread while open.

    Why: with every worker thread streaming, no page loads and ``/healthz`` stops answering,
    so the watchdog restarts the appliance mid-reading. ``total`` leaves threads free for the
    other pages; ``per_user`` stops one account (tabs left open, a browser's auto-reconnect)
    from taking them all. A user at their limit, or when all are taken, gets a slot by ending
    their own oldest stream: the server learns that a page was left only at its next
    keepalive, and a clinician flipping through photographs must not find the newest page
    without live lesions. Only a user with no stream to give up is refused.
    """

    def __init__(self, total: int, per_user: int = 3) -> None:
        self.total = max(1, total)
        self.per_user = max(1, per_user)
        self._open: dict[Any, list[Callable[[], None]]] = {}
        self._lock = threading.Lock()

    def acquire(self, user: Any, stop: Callable[[], None] = lambda: None) -> bool:
        """Take a slot for ``user`` (``stop`` ends that stream if it must make room); False when none."""
        with self._lock:
            mine = self._open.get(user, [])
            full = sum(len(v) for v in self._open.values()) >= self.total
            evict = None
            if len(mine) >= self.per_user or full:
                if not mine:
                    return False
                evict = mine.pop(0)
            self._open[user] = mine + [stop]
        if evict is not None:
            evict()
        return True

    def release(self, user: Any, stop: Callable[[], None] = lambda: None) -> None:
        """Give ``user``'s slot back (the one taken with ``stop``; a no-op when it was evicted)."""
        with self._lock:
            mine = self._open.get(user, [])
            if stop in mine:
                mine.remove(stop)
            if not mine:
                self._open.pop(user, None)
