"""Live reader sessions: gaze in, lesion events out to every browser watching the photograph.

One :class:`LiveSession` per open photograph holds the glance session and a list of subscriber
queues (one per server-sent-events connection). Gaze arrives from the pointer route or from a
replay thread; whatever thread pushes a sample runs the pipeline step and fans the events out.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from appliance.config import Config
from appliance.gaze.base import GazeSample
from appliance.glance.lesions import Lesion
from appliance.ui.services import LesionEvent, LiveGlance

logger = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 1000


def lesion_payload(lesion: Lesion) -> dict[str, Any]:
    """The lesion as JSON for the browser: the lesions.json fields plus a contour polygon."""
    out = lesion.to_json()
    if lesion.mask is not None and lesion.mask.any():
        import cv2

        contours, _ = cv2.findContours(lesion.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if contours:
            c = max(contours, key=cv2.contourArea).reshape(-1, 2)
            out["contour"] = [[int(x) + lesion.bbox[0], int(y) + lesion.bbox[1]] for x, y in c]
    return out


class LiveSession:
    """The live state of one photograph.

    Parameters
    ----------
    image_id
        The photograph's id.
    glance
        The pipeline session.
    persist
        Called with ``(image_id, lesion_json)`` for every new or updated lesion (stores it).
    """

    def __init__(self, image_id: int, glance: LiveGlance, persist: Callable[[int, dict[str, Any]], None]) -> None:
        self.image_id = image_id
        self.glance = glance
        self.persist = persist
        self.lock = threading.Lock()
        self.subscribers: list[queue.Queue] = []
        self.replay_thread: Optional[threading.Thread] = None
        self.replay_stop = threading.Event()
        self.source = "pointer"

    def subscribe(self) -> queue.Queue:
        """Return a queue that receives every event from now on."""
        q: queue.Queue = queue.Queue(maxsize=SUBSCRIBER_QUEUE)
        with self.lock:
            self.subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        """Stop delivering to ``q``."""
        with self.lock:
            if q in self.subscribers:
                self.subscribers.remove(q)

    def publish(self, event: dict[str, Any]) -> None:
        """Send one event to every subscriber; a full queue (a stalled browser) drops it."""
        with self.lock:
            subs = list(self.subscribers)
        for q in subs:
            try:
                q.put_nowait(event)
            except queue.Full:
                logger.warning("a reader connection is not keeping up; event dropped")

    def push(self, sample: GazeSample) -> int:
        """Run one sample through the pipeline; return how many lesion events it produced."""
        with self.lock:
            events: list[LesionEvent] = self.glance.push(sample)
        if sample.has_gaze:
            self.publish({"type": "gaze", "x": round(sample.x, 1), "y": round(sample.y, 1)})
        for ev in events:
            payload = lesion_payload(ev.lesion)
            self.persist(self.image_id, payload)
            self.publish({"type": "lesion", "kind": ev.kind, "lesion": payload,
                          "fixation_wall_ms": ev.fixation_wall_ns / 1e6, "sent_wall_ms": time.time_ns() / 1e6,
                          "fixation": {"x": round(ev.lesion.x, 1), "y": round(ev.lesion.y, 1)}})
        return len(events)

    def prompt(self, x: float, y: float) -> Optional[dict[str, Any]]:
        """Prompt the model at an image point; return the lesion JSON, or None."""
        with self.lock:
            lesion = self.glance.prompt(x, y)
        if lesion is None:
            return None
        payload = lesion_payload(lesion)
        self.persist(self.image_id, payload)
        return payload

    def start_replay(self, samples: list[GazeSample], speed: float = 1.0) -> None:
        """Feed a recording in its own timing (``speed`` × real time) on a named thread."""
        self.stop_replay()
        self.replay_stop = threading.Event()
        stop = self.replay_stop
        self.source = "replay"

        def run() -> None:
            start_wall = time.monotonic()
            t0 = samples[0].timestamp_ns if samples else 0
            for s in samples:
                due = (s.timestamp_ns - t0) / 1e9 / speed
                delay = due - (time.monotonic() - start_wall)
                if delay > 0 and stop.wait(delay):
                    return
                if stop.is_set():
                    return
                self.push(s)
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

    def close(self) -> None:
        """Stop the replay and release the pipeline session."""
        self.stop_replay()
        self.glance.close()


class LiveHub:
    """All live sessions of the server, created on first use per photograph."""

    def __init__(self, config: Config, live_factory: Callable[[np.ndarray, Config], LiveGlance],
                 persist: Callable[[int, dict[str, Any]], None]) -> None:
        self.config = config
        self.live_factory = live_factory
        self.persist = persist
        self.sessions: dict[int, LiveSession] = {}
        self.lock = threading.Lock()

    def get(self, image_id: int, rgb_loader: Callable[[], np.ndarray]) -> LiveSession:
        """Return the session of ``image_id``, opening it (decoding the photograph) if needed."""
        with self.lock:
            session = self.sessions.get(image_id)
            if session is None:
                session = LiveSession(image_id, self.live_factory(rgb_loader(), self.config), self.persist)
                self.sessions[image_id] = session
            return session

    def close(self) -> None:
        """Close every session (server shutdown)."""
        with self.lock:
            for s in self.sessions.values():
                s.close()
            self.sessions.clear()
