"""Incremental dispersion-based (I-DT) fixation detection, in degrees of visual angle.

I-DT (Salvucci & Goldberg, ETRA 2000) groups consecutive samples whose dispersion
``(max x - min x) + (max y - min y)`` stays under a threshold for at least a minimum
duration. It is chosen over velocity-based detection because it only needs positions
(no filtering of a 200 Hz derivative) and works unchanged at any rate up to 200 Hz,
including the pointer's irregular events.

Defaults (:class:`FixationParams`):

- ``dispersion_deg = 1.0``: Salvucci & Goldberg suggest 0.5-1 deg; the Neon's sample
  noise is about 0.1 deg while its *accuracy* error (1.3-1.8 deg) is a bias shared by the
  whole fixation, so it does not widen the dispersion.
- ``min_duration_ms = 100``: the usual floor; shorter dwells carry no visual processing.
- ``max_gap_ms = 75``: a missing stretch up to this long (dropped packets, a partial
  blink) is bridged; a longer one (a blink is 100-400 ms) ends the fixation.
- ``quiet_ms = 250``: a live stream that delivers no sample at all for this long (the
  source stopped, the tracker disconnected) ends the open window (:meth:`FixationDetector.tick`).
  Silence is not the end of a look: a tracker streams through blinks and track loss (no-gaze
  samples, which end the window after ``max_gap_ms``), and the pointer page sends no-gaze
  samples when the finger lifts. What falls silent is the network, whose Wi-Fi stalls of
  100-200 ms cut every fixation in two when ``max_gap_ms`` decided here as well.
- ``clock_jump_ms = 1000``: a step in time larger than this, forwards or backwards, is a
  clock change (NTP, a device reconnect), not a gap: the window is closed and the
  sample starts a fresh time base. Smaller backward steps are out-of-order samples and
  are dropped.
- ``view_change_tolerance = 0.10``: two samples in a row whose px_per_deg differs by more
  than 10 % from the open window's (the mean of its samples) are a new view (a zoom: the
  reader's wheel steps 20 %) and end the window; a single such sample is dropped as
  ``scale_outlier``. A gaze CSV may carry px_per_deg per sample, measured from the viewing
  distance with its noise: at the former 1 % a jitter of half a percent cut most fixations
  into pieces too short to count, and with one sample enough at 10 %, a 3 % jitter still
  lost 17 % of the fixation time (against the window's first sample). A zoom persists, so
  it costs one sample. A scale 10 % off moves the dispersion limit by 10 %, and a zoom
  smaller than that moves the gaze in image px, which the dispersion limit sees anyway.

Robustness: the detector never raises on a sample. Every sample it does not use is
counted in :attr:`FixationDetector.counters` under the reason (``no_gaze``,
``not_worn``, ``off_image``, ``backwards``, ``clock_jump``, ``malformed``,
``no_scale``, ``bad_px_per_deg``, ``scale_outlier``), and ``gap``, ``view_change`` and ``too_short``
count windows ended early or discarded.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Optional

from appliance.gaze.base import GazeSample

logger = logging.getLogger(__name__)

COUNTER_KEYS = (
    "accepted", "no_gaze", "not_worn", "off_image", "backwards", "clock_jump", "malformed",
    "no_scale", "bad_px_per_deg", "scale_outlier", "gap", "view_change", "too_short", "fixations",
)


@dataclass(frozen=True)
class FixationParams:
    """I-DT settings; see the module docstring for why each default."""

    dispersion_deg: float = 1.0
    min_duration_ms: float = 100.0
    max_gap_ms: float = 75.0
    quiet_ms: float = 250.0
    clock_jump_ms: float = 1000.0
    view_change_tolerance: float = 0.10

    def __post_init__(self) -> None:
        if not (self.dispersion_deg > 0 and self.min_duration_ms >= 0 and self.max_gap_ms > 0):
            raise ValueError("Fixation dispersion and gap must be positive and the minimum duration >= 0.")
        if not self.quiet_ms >= self.max_gap_ms:
            raise ValueError("The quiet time must be at least the maximum gap.")
        if not self.clock_jump_ms > self.max_gap_ms:
            raise ValueError("The clock-jump threshold must exceed the maximum gap.")


@dataclass(frozen=True)
class Fixation:
    """One fixation in image coordinates.

    Attributes
    ----------
    index
        0, 1, 2, ... in the order the detector emitted them.
    start_ns, end_ns
        Timestamps of the first and last sample.
    x, y
        Mean gaze position, image px.
    px_per_deg
        Image px per degree during the fixation.
    n_samples
        Samples it holds.
    dispersion_deg
        Its I-DT dispersion.
    """

    index: int
    start_ns: int
    end_ns: int
    x: float
    y: float
    px_per_deg: float
    n_samples: int
    dispersion_deg: float

    @property
    def duration_ms(self) -> float:
        """float: ``end_ns - start_ns`` in ms."""
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def duration_s(self) -> float:
        """float: duration in s (the heat-map weight)."""
        return (self.end_ns - self.start_ns) / 1e9


class FixationDetector:
    """Feed samples one at a time; get fixations as they end.

    Parameters
    ----------
    params
        I-DT settings.
    default_px_per_deg
        Image px per degree for samples whose ``px_per_deg`` is NaN (the configured
        display geometry); NaN means such samples are dropped as ``no_scale``.
    image_size
        ``(width, height)`` in image px; samples outside are dropped as ``off_image``.
        None disables the check.
    """

    def __init__(self, params: FixationParams = FixationParams(), default_px_per_deg: float = math.nan,
                 image_size: Optional[tuple[int, int]] = None) -> None:
        self.params = params
        self.default_px_per_deg = float(default_px_per_deg)
        self.image_size = image_size
        self.counters: dict[str, int] = {k: 0 for k in COUNTER_KEYS}
        self._max_gap_ns = int(params.max_gap_ms * 1e6)
        self._quiet_ns = int(params.quiet_ms * 1e6)
        self._jump_ns = int(params.clock_jump_ms * 1e6)
        self._min_dur_ns = int(params.min_duration_ms * 1e6)
        self._last_t: Optional[int] = None
        self._window: deque[tuple[int, float, float]] = deque()
        self._ppd = math.nan  # the open window's scale: the mean px_per_deg of its samples
        self._ppd_n = 0
        self._scale_suspect = False  # the previous sample's scale was off the window's
        self._bounds = (math.inf, -math.inf, math.inf, -math.inf)
        self._sx = 0.0
        self._sy = 0.0
        self._next_index = 0

    # -- public API -------------------------------------------------------------------
    def feed(self, sample: GazeSample) -> list[Fixation]:
        """Take one sample; return the fixations it ended (usually none, at most two)."""
        try:
            t = int(sample.timestamp_ns)
            x, y = float(sample.x), float(sample.y)
            worn = bool(sample.worn)
            ppd = float(sample.px_per_deg)
        except (AttributeError, TypeError, ValueError, OverflowError):
            self.counters["malformed"] += 1
            return []
        out: list[Fixation] = []
        if self._last_t is not None:
            dt = t - self._last_t
            if dt < -self._jump_ns or dt > self._jump_ns:
                self.counters["clock_jump"] += 1
                logger.warning("gaze clock jumped by %.3f s; starting a new time base", dt / 1e9)
                out += self._end()
            elif dt < 0:
                self.counters["backwards"] += 1
                return out
        self._last_t = t
        if not worn:
            return out + self._drop("not_worn", t)
        if not (math.isfinite(x) and math.isfinite(y)):
            return out + self._drop("no_gaze", t)
        if self.image_size is not None:
            w, h = self.image_size
            if not (0.0 <= x < w and 0.0 <= y < h):
                return out + self._drop("off_image", t)
        if not (math.isfinite(ppd) and ppd > 0):
            if not math.isnan(ppd):
                self.counters["bad_px_per_deg"] += 1
            ppd = self.default_px_per_deg
            if not (math.isfinite(ppd) and ppd > 0):
                return out + self._drop("no_scale", t)
        if self._window:
            if t - self._window[-1][0] > self._max_gap_ns:
                self.counters["gap"] += 1
                out += self._end()
            elif abs(ppd / self._ppd - 1.0) > self.params.view_change_tolerance:
                if not self._scale_suspect:  # noise until the next sample confirms a new view
                    self._scale_suspect = True
                    self.counters["scale_outlier"] += 1
                    return out
                self.counters["view_change"] += 1
                out += self._end()
        self._scale_suspect = False
        self.counters["accepted"] += 1
        out += self._add(t, x, y, ppd)
        return out

    def feed_many(self, samples: Iterable[GazeSample]) -> list[Fixation]:
        """Feed several samples; return every fixation they ended, in order."""
        out: list[Fixation] = []
        for s in samples:
            out += self.feed(s)
        return out

    def tick(self, now_ns: int) -> list[Fixation]:
        """Tell the detector the time is ``now_ns`` with no new sample (a live source fell
        silent): ends the open window after ``quiet_ms``, so the fixation is delivered
        without waiting for a sample that may never come."""
        if self._window and now_ns - self._window[-1][0] > self._quiet_ns:
            self.counters["gap"] += 1
            return self._end()
        return []

    def flush(self) -> list[Fixation]:
        """End of stream: close the open window and return it if it is a fixation."""
        return self._end()

    @property
    def pending(self) -> bool:
        """bool: True while a window of samples is open."""
        return bool(self._window)

    # -- internals --------------------------------------------------------------------
    def _drop(self, reason: str, t: int) -> list[Fixation]:
        self.counters[reason] += 1
        if self._window and t - self._window[-1][0] > self._max_gap_ns:
            self.counters["gap"] += 1
            return self._end()
        return []

    def _dispersion_px(self, bounds: tuple[float, float, float, float]) -> float:
        x0, x1, y0, y1 = bounds
        return (x1 - x0) + (y1 - y0)

    def _add(self, t: int, x: float, y: float, ppd: float) -> list[Fixation]:
        if not self._window:
            self._start(t, x, y, ppd)
            return []
        x0, x1, y0, y1 = self._bounds
        grown = (min(x0, x), max(x1, x), min(y0, y), max(y1, y))
        limit_px = self.params.dispersion_deg * self._ppd
        if self._dispersion_px(grown) <= limit_px:
            self._append(t, x, y, grown)
            self._take_scale(ppd)
            return []
        if self._window[-1][0] - self._window[0][0] >= self._min_dur_ns:
            fixation = self._emit()
            self._start(t, x, y, ppd)
            return [fixation]
        # Not yet a fixation: slide the window's start forward until it fits again.
        self._append(t, x, y, grown)
        self._take_scale(ppd)
        while len(self._window) > 1 and self._dispersion_px(self._bounds) > limit_px:
            _, ox, oy = self._window.popleft()
            self._sx -= ox
            self._sy -= oy
            xs = [p[1] for p in self._window]
            ys = [p[2] for p in self._window]
            self._bounds = (min(xs), max(xs), min(ys), max(ys))
        return []

    def _start(self, t: int, x: float, y: float, ppd: float) -> None:
        self._window.clear()
        self._window.append((t, x, y))
        self._ppd, self._ppd_n = ppd, 1
        self._bounds = (x, x, y, y)
        self._sx, self._sy = x, y

    def _take_scale(self, ppd: float) -> None:
        # A running mean that stays exactly the value while every sample carries the same one.
        self._ppd_n += 1
        self._ppd += (ppd - self._ppd) / self._ppd_n

    def _append(self, t: int, x: float, y: float, bounds: tuple[float, float, float, float]) -> None:
        self._window.append((t, x, y))
        self._bounds = bounds
        self._sx += x
        self._sy += y

    def _emit(self) -> Fixation:
        n = len(self._window)
        fixation = Fixation(
            index=self._next_index,
            start_ns=self._window[0][0],
            end_ns=self._window[-1][0],
            x=self._sx / n,
            y=self._sy / n,
            px_per_deg=self._ppd,
            n_samples=n,
            dispersion_deg=self._dispersion_px(self._bounds) / self._ppd,
        )
        self._next_index += 1
        self.counters["fixations"] += 1
        logger.debug("fixation %d at (%.1f, %.1f) for %.0f ms", fixation.index, fixation.x,
                     fixation.y, fixation.duration_ms)
        return fixation

    def _end(self) -> list[Fixation]:
        if not self._window:
            return []
        out = []
        if self._window[-1][0] - self._window[0][0] >= self._min_dur_ns:
            out.append(self._emit())
        else:
            self.counters["too_short"] += 1
        self._window.clear()
        return out


def detect_fixations(samples: Iterable[GazeSample], params: FixationParams = FixationParams(),
                     default_px_per_deg: float = math.nan,
                     image_size: Optional[tuple[int, int]] = None) -> tuple[list[Fixation], dict[str, int]]:
    """Batch I-DT: feed every sample, flush, and return ``(fixations, counters)``.

    Identical to the incremental detector by construction, which is what lets a live run
    and a batch run over the same gaze agree.
    """
    detector = FixationDetector(params, default_px_per_deg, image_size)
    fixations = detector.feed_many(samples) + detector.flush()
    return fixations, dict(detector.counters)
