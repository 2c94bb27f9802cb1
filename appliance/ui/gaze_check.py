"""The Neon's accuracy check on the reader: five targets, one constant correction.

Why: a head-worn tracker's error for this wearer and this fit of the glasses is mostly a
constant offset (Neon: about 1.8°), several times the heat map's 1° kernel.
:mod:`appliance.gaze.validation` measures it from a few seconds of looking at known screen
points; this module runs that measurement on the open photograph's Neon link and, when the
error left after correction is small enough, applies the correction to the link's mapper for
the rest of the reading. A failed check changes nothing and says why (targets not seen, the
glasses need refitting).

The page shows the targets on the schedule the server gave it (``target_ms`` each, from the
server's answer); the server cuts the raw screen-px gaze into the same windows in the
appliance clock. Validation skips each window's first 300 ms, the saccade to the target,
which also covers the page's display latency. Gaze during the check does not reach the glance
pipeline: a fixation on a target is not a look at the photograph.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from appliance.config import DisplayConfig
from appliance.gaze.validation import TargetWindow, ValidationResult, evaluate, validation_targets

logger = logging.getLogger(__name__)

#: How long each target is shown, ms: the 300 ms saccade plus over a second of fixation.
TARGET_MS = 1500


@dataclass
class GazeCheck:
    """One accuracy check in progress on a Neon link's mapper."""

    mapper: Any
    screen_px_per_deg: float
    windows: list[TargetWindow]
    samples: list[tuple[int, float, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, timestamp_ns: int, x: float, y: float) -> None:
        """The mapper's tap: one raw (uncorrected) gaze sample in screen px."""
        with self._lock:
            self.samples.append((int(timestamp_ns), x, y))

    @property
    def ends_ns(self) -> int:
        """int: the appliance-clock time the last target goes off."""
        return self.windows[-1].end_ns

    def targets(self) -> list[tuple[float, float]]:
        """The targets in screen px, in the order shown."""
        return [(w.x_px, w.y_px) for w in self.windows]


def start_check(mapper: Any, display: DisplayConfig, screen_px_per_deg: float,
                target_ms: int = TARGET_MS, now_ns: Optional[int] = None) -> GazeCheck:
    """Start recording the raw gaze of ``mapper`` for a check whose first target shows now."""
    t0 = time.time_ns() if now_ns is None else int(now_ns)
    step = int(target_ms * 1e6)
    windows = [TargetWindow(x, y, t0 + k * step, t0 + (k + 1) * step)
               for k, (x, y) in enumerate(validation_targets(display.width_px, display.height_px))]
    check = GazeCheck(mapper, screen_px_per_deg, windows)
    mapper.tap = check.take
    return check


def finish_check(check: GazeCheck) -> ValidationResult:
    """Stop recording, measure, and apply the correction when the check passed.

    Called before the last target went off, it waits for it (the page and the appliance
    share the clock only to within a request's latency).
    """
    wait_s = (check.ends_ns - time.time_ns()) / 1e9
    if wait_s > 0:
        time.sleep(min(wait_s, 1.0))
    check.mapper.tap = None
    with check._lock:
        samples = list(check.samples)
    result = evaluate(samples, check.windows, check.screen_px_per_deg)
    if result.ok:
        check.mapper.offset_px = result.offset_px
    logger.info("gaze check: %s", result.message)
    return result
