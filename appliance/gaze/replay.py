"""Replay of a finite, recorded list of gaze samples (CSV, Pupil Labs export, simulation).

A recording is replayed either as fast as the consumer pulls (batch runs, tests) or paced
at its recorded rate times a speed factor (demos, latency measurements). Pacing uses an
injectable monotonic clock and sleep, so tests never depend on wall time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, Sequence

from appliance.gaze.base import GazeSample, GazeSource, SourceStatus
from appliance.gaze.fixations import FixationParams

logger = logging.getLogger(__name__)

#: A step between consecutive samples longer than this is a clock change, not a pause, and is
#: replayed as no wait (the fixation detector's own threshold, :mod:`appliance.gaze.fixations`).
CLOCK_JUMP_NS = int(FixationParams().clock_jump_ms * 1e6)


def replay_offsets_s(samples: Sequence[GazeSample]) -> list[float]:
    """Return when each sample is due in a real-time replay, seconds after the first (speed 1).

    Why not ``t_i - t_0``: a recording whose clock jumped forward by hours (NTP, a tracker
    reconnect) then stalled the replay for those hours, and one whose clock jumped back
    delivered the whole rest of the recording at once, out of its own timing. Time is
    counted as the fixation detector counts it instead: a step beyond :data:`CLOCK_JUMP_NS`
    either way starts a new time base and waits nothing, a smaller backward step is an
    out-of-order sample that waits nothing and moves no clock, any other step is waited for.
    """
    offsets = []
    elapsed_ns = 0
    last: Optional[int] = None
    for sample in samples:
        step = 0 if last is None else sample.timestamp_ns - last
        if abs(step) > CLOCK_JUMP_NS:
            last = sample.timestamp_ns
        elif step >= 0:
            elapsed_ns += step
            last = sample.timestamp_ns
        offsets.append(elapsed_ns / 1e9)
    return offsets


class SampleReplay(GazeSource):
    """Deliver a fixed sequence of :class:`GazeSample` through ``receive``.

    Parameters
    ----------
    samples
        The recording, in file order (not re-sorted: a recording whose clock goes
        backwards is replayed as it is, and the fixation detector counts it).
    speed
        None or 0: as fast as possible. Otherwise real-time pacing: sample *i* is due
        ``(t_i - t_0) / speed`` seconds after the first ``receive``.
    kind
        Name shown in :meth:`status`.
    clock, sleep
        Monotonic clock in seconds and sleep function (injectable for tests).
    """

    kind = "replay"

    def __init__(
        self,
        samples: Sequence[GazeSample],
        speed: Optional[float] = None,
        kind: Optional[str] = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if speed is not None and speed < 0:
            raise ValueError(f"Replay speed must be positive or 0 (as fast as possible), not {speed}.")
        self._samples = list(samples)
        self._speed = speed or None
        self._offsets_s = replay_offsets_s(self._samples) if self._speed is not None else []
        self._clock = clock
        self._sleep = sleep
        self._index = 0
        self._start_s: Optional[float] = None
        self._closed = False
        self._lock = threading.Lock()
        if kind is not None:
            self.kind = kind
        logger.info("%s replay of %d samples, speed %s", self.kind, len(self._samples),
                    self._speed or "as fast as possible")

    @property
    def samples(self) -> list[GazeSample]:
        """list[GazeSample]: the whole recording (a copy)."""
        return list(self._samples)

    def __len__(self) -> int:
        return len(self._samples)

    def _due_s(self, index: int) -> float:
        """Seconds after the start at which sample ``index`` is due (paced mode)."""
        return self._offsets_s[index] / self._speed

    def receive(self, timeout_s: Optional[float] = None) -> Optional[GazeSample]:
        """Return the next sample, or None at the end or when it is not due within
        ``timeout_s`` (paced mode only)."""
        with self._lock:
            if self._closed or self._index >= len(self._samples):
                return None
            if self._speed is not None:
                now = self._clock()
                if self._start_s is None:
                    self._start_s = now
                wait_s = self._start_s + self._due_s(self._index) - now
                if wait_s > 0:
                    if timeout_s is not None and timeout_s < wait_s:
                        self._sleep(max(0.0, timeout_s))
                        return None
                    self._sleep(wait_s)
            sample = self._samples[self._index]
            self._index += 1
            return sample

    @property
    def speed(self) -> float:
        """float: the pacing factor (1 when replaying as fast as possible, never quiet then)."""
        return self._speed or 1.0

    @property
    def finished(self) -> bool:
        """bool: True once every sample has been delivered (or the replay was closed)."""
        return self._closed or self._index >= len(self._samples)

    def status(self) -> SourceStatus:
        """Return progress through the recording."""
        return SourceStatus(kind=self.kind, connected=not self._closed,
                            detail={"delivered": self._index, "total": len(self._samples)})

    def close(self) -> None:
        """Stop the replay; later ``receive`` calls return None. Idempotent."""
        self._closed = True
