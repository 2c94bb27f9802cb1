"""A simulated reader: gaze of a clinician searching a fundus photograph for MAs.

No public gaze recordings on fundus photographs exist, so tests and evaluation use this
reader. Every parameter is explicit in :class:`ReaderParams`, with its reason:

- the photograph is shown fitted to the configured screen (``display``), which with the
  viewing distance fixes image px per degree (:mod:`appliance.gaze.geometry`);
- the reader searches the field of view along a serpentine raster of points
  ``scan_spacing_deg`` apart (jittered by ``scan_jitter_deg``), the systematic search
  graders are taught;
- at each fixation, every MA within ``notice_radius_deg`` of the fovea is noticed with
  probability ``notice_prob * (1 - eccentricity / notice_radius_deg)`` (acuity falls off
  quickly outside the fovea, and a 10-25 px dot is small); a noticed MA draws
  ``dwell_fixations`` fixations on it, longer than search fixations
  (``dwell_ms_mean``), then the search resumes;
- fixation durations are gamma distributed (shape ``fixation_ms_shape``, mean
  ``fixation_ms_mean``), floored at ``fixation_ms_min``; saccades last
  ``saccade_ms_base + saccade_ms_per_deg * amplitude`` (the main sequence) and their
  samples move linearly between fixations;
- the *tracker* adds, per fixation, an error drawn from an isotropic 2-D normal whose
  mean magnitude is ``tracker_error_deg`` (1.5 deg, the Neon's 1.3-1.8 deg), plus a
  constant ``offset_deg`` (a calibration bias) and per-sample noise ``precision_deg``;
- blinks arrive as a Poisson process (``blink_rate_hz``, 15 a minute) lasting
  ``blink_ms``; with probability ``track_loss_prob`` a whole fixation is lost. Both give
  samples with empty x/y, ``worn`` stays 1.

Deterministic under a seed (numpy's PCG64). The output records which MAs the reader
dwelt on; an MA counts only when one of its dwell fixations kept at least
``fixation_ms_min`` of unbroken samples, so blinks and track loss can take it away.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from appliance.config import DisplayConfig
from appliance.gaze.base import GazeSample
from appliance.gaze.geometry import default_image_px_per_deg
from appliance.gaze.replay import SampleReplay

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReaderParams:
    """Parameters of the simulated reader; angles in degrees, times in ms (see module)."""

    display: DisplayConfig = field(default_factory=DisplayConfig)
    sample_rate_hz: float = 200.0
    tracker_error_deg: float = 1.5
    offset_deg: tuple[float, float] = (0.0, 0.0)
    precision_deg: float = 0.1
    fixation_ms_mean: float = 250.0
    fixation_ms_shape: float = 4.0
    fixation_ms_min: float = 110.0
    dwell_ms_mean: float = 450.0
    dwell_fixations: int = 2
    saccade_ms_base: float = 20.0
    saccade_ms_per_deg: float = 2.5
    scan_spacing_deg: float = 3.0
    scan_jitter_deg: float = 0.5
    notice_radius_deg: float = 2.0
    notice_prob: float = 0.9
    blink_rate_hz: float = 0.25
    blink_ms: tuple[float, float] = (100.0, 300.0)
    track_loss_prob: float = 0.02
    start_ns: int = 0

    def __post_init__(self) -> None:
        if not (0 < self.sample_rate_hz <= 1000):
            raise ValueError("The sample rate must lie in (0, 1000] Hz.")
        if self.tracker_error_deg < 0 or self.precision_deg < 0:
            raise ValueError("Tracker error and precision cannot be negative.")
        if not (0 <= self.notice_prob <= 1 and 0 <= self.track_loss_prob <= 1):
            raise ValueError("Probabilities must lie in [0, 1].")
        if self.scan_spacing_deg <= 0 or self.fixation_ms_mean <= 0 or self.fixation_ms_shape <= 0:
            raise ValueError("Scan spacing and fixation durations must be positive.")


@dataclass(frozen=True)
class MaTarget:
    """A ground-truth MA: ``index`` (0-based, raster order of the mask's components),
    centroid ``x``, ``y`` in image px and equivalent radius ``radius_px``."""

    index: int
    x: float
    y: float
    radius_px: float


@dataclass(frozen=True)
class IntendedFixation:
    """Where the reader actually looked (before tracker error), for evaluation."""

    start_ns: int
    end_ns: int
    x: float
    y: float
    kind: str  # "scan" or "dwell"
    ma_index: Optional[int] = None


@dataclass
class SimulatedReading:
    """Output of :func:`simulate_reading`."""

    samples: list[GazeSample]
    mas: tuple[MaTarget, ...]
    dwelt: tuple[int, ...]
    intents: tuple[IntendedFixation, ...]
    px_per_deg: float
    seed: int


def ma_targets_from_mask(mask: np.ndarray) -> list[MaTarget]:
    """Return one :class:`MaTarget` per 8-connected component of ``mask`` (H x W, > 0 = MA)."""
    import cv2  # imported here: only mask handling needs it

    binary = (np.asarray(mask) > 0).astype(np.uint8)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
    return [MaTarget(i - 1, float(centroids[i][0]), float(centroids[i][1]),
                     float(math.sqrt(stats[i][cv2.CC_STAT_AREA] / math.pi))) for i in range(1, n)]


def _scan_points(width: int, height: int, cx: float, cy: float, radius: float,
                 spacing: float) -> list[tuple[float, float]]:
    """Serpentine raster of points ``spacing`` apart inside the FOV disc and the image."""
    points: list[tuple[float, float]] = []
    y0 = max(cy - radius, 0.0) + spacing / 2
    y1 = min(cy + radius, float(height))
    row = 0
    y = y0
    while y < y1:
        half = math.sqrt(max(0.0, radius ** 2 - (y - cy) ** 2))
        xa = max(cx - half, 0.0) + spacing / 2
        xb = min(cx + half, float(width))
        xs = list(np.arange(xa, xb, spacing)) or [0.5 * (max(cx - half, 0.0) + xb)]
        if row % 2:
            xs.reverse()
        points += [(float(x), float(y)) for x in xs]
        row += 1
        y += spacing
    return points


def simulate_reading(
    width: int,
    height: int,
    mas: Sequence[MaTarget] = (),
    params: ReaderParams = ReaderParams(),
    seed: int = 0,
    fov_center_xy: Optional[tuple[float, float]] = None,
    fov_radius_px: Optional[float] = None,
    fov_mask: Optional[np.ndarray] = None,
) -> SimulatedReading:
    """Simulate one reading of a photograph.

    Parameters
    ----------
    width, height
        Photograph size in image px.
    mas
        Ground-truth MAs the reader may notice (from :func:`ma_targets_from_mask`).
    params
        Reader, tracker and display parameters.
    seed
        Seed of the random generator; the same inputs and seed give the same output.
    fov_center_xy, fov_radius_px
        The field of view in image px; by default the image centre and half the larger
        side clipped by the image (IDRiD photographs are cropped to the FOV's width).
    fov_mask
        H x W bool mask of the FOV (:func:`appliance.imaging.fov.find_fov`); scan points
        outside it are skipped, as a reader does not search the black margin.

    Returns
    -------
    SimulatedReading
        Samples (image px, ``px_per_deg`` filled in), the MAs dwelt on, and the intended
        fixations.
    """
    if width <= 0 or height <= 0:
        raise ValueError("Image width and height must be positive.")
    rng = np.random.default_rng(seed)
    p = params
    ppd = default_image_px_per_deg(width, height, p.display)
    cx, cy = fov_center_xy if fov_center_xy is not None else (width / 2.0, height / 2.0)
    radius = fov_radius_px if fov_radius_px is not None else max(width, height) / 2.0
    dt_ns = 1e9 / p.sample_rate_hz
    axis_sigma = p.tracker_error_deg / math.sqrt(math.pi / 2.0)
    offset = np.array(p.offset_deg, dtype=float)

    xs: list[float] = []
    ys: list[float] = []
    lost: list[bool] = []
    intents: list[IntendedFixation] = []
    dwell_ranges: list[tuple[int, int, int]] = []  # (ma index, first sample, end sample)
    state = {"prev": None}

    def t_of(i: int) -> int:
        return p.start_ns + int(round(i * dt_ns))

    def fixate(tx: float, ty: float, duration_ms: float, kind: str, ma: Optional[int]) -> None:
        err = (rng.normal(0.0, axis_sigma, 2) + offset) * ppd
        mx, my = tx + err[0], ty + err[1]
        prev = state["prev"]
        if prev is not None:
            amp_deg = math.hypot(mx - prev[0], my - prev[1]) / ppd
            n_sac = int(round((p.saccade_ms_base + p.saccade_ms_per_deg * amp_deg) / 1000 * p.sample_rate_hz))
            for k in range(1, n_sac + 1):
                f = k / (n_sac + 1)
                xs.append(prev[0] + f * (mx - prev[0]))
                ys.append(prev[1] + f * (my - prev[1]))
                lost.append(False)
        n = max(2, int(round(duration_ms / 1000 * p.sample_rate_hz)) + 1)
        noise = rng.normal(0.0, p.precision_deg * ppd, (n, 2))
        is_lost = bool(rng.random() < p.track_loss_prob)
        first = len(xs)
        xs.extend((mx + noise[:, 0]).tolist())
        ys.extend((my + noise[:, 1]).tolist())
        lost.extend([is_lost] * n)
        intents.append(IntendedFixation(t_of(first), t_of(first + n - 1), tx, ty, kind, ma))
        if ma is not None:
            dwell_ranges.append((ma, first, first + n))
        state["prev"] = (mx, my)

    def duration(mean_ms: float) -> float:
        return max(p.fixation_ms_min, float(rng.gamma(p.fixation_ms_shape, mean_ms / p.fixation_ms_shape)))

    noticed: set[int] = set()
    points = _scan_points(width, height, cx, cy, radius, p.scan_spacing_deg * ppd)
    if fov_mask is not None:
        inside = np.asarray(fov_mask, dtype=bool)
        if inside.shape != (height, width):
            raise ValueError("The FOV mask must have the photograph's size.")
        points = [(x, y) for x, y in points if inside[min(int(y), height - 1), min(int(x), width - 1)]]
    for sx, sy in points:
        jx, jy = rng.normal(0.0, p.scan_jitter_deg * ppd, 2)
        tx = float(np.clip(sx + jx, 0, width - 1))
        ty = float(np.clip(sy + jy, 0, height - 1))
        fixate(tx, ty, duration(p.fixation_ms_mean), "scan", None)
        seen = []
        for ma in mas:
            if ma.index in noticed:
                continue
            ecc = math.hypot(ma.x - tx, ma.y - ty) / ppd
            if ecc < p.notice_radius_deg:
                draw = rng.random()
                if draw < p.notice_prob * (1.0 - ecc / p.notice_radius_deg):
                    seen.append((ecc, ma))
        for _, ma in sorted(seen, key=lambda e: (e[0], e[1].index)):
            noticed.add(ma.index)
            for _ in range(max(1, p.dwell_fixations)):
                fixate(ma.x, ma.y, duration(p.dwell_ms_mean), "dwell", ma.index)

    total = len(xs)
    blank = np.array(lost, dtype=bool)
    t_s = 0.0
    total_s = total / p.sample_rate_hz
    while p.blink_rate_hz > 0:
        t_s += float(rng.exponential(1.0 / p.blink_rate_hz))
        if t_s >= total_s:
            break
        dur_s = float(rng.uniform(*p.blink_ms)) / 1000.0
        i0 = int(t_s * p.sample_rate_hz)
        blank[i0:min(total, i0 + int(math.ceil(dur_s * p.sample_rate_hz)))] = True

    min_run = int(math.ceil(p.fixation_ms_min / 1000 * p.sample_rate_hz)) + 1
    dwelt = set()
    for ma, a, b in dwell_ranges:
        run = best = 0
        for v in blank[a:b]:
            run = 0 if v else run + 1
            best = max(best, run)
        if best >= min_run:
            dwelt.add(ma)

    samples = [GazeSample(t_of(i), math.nan if blank[i] else xs[i], math.nan if blank[i] else ys[i],
                          True, ppd) for i in range(total)]
    logger.info("simulated reading: %d samples (%.1f s), %d fixations, %d of %d MAs dwelt on",
                total, total_s, len(intents), len(dwelt), len(mas))
    return SimulatedReading(samples, tuple(mas), tuple(sorted(dwelt)), tuple(intents), ppd, seed)


class SimulatedSource(SampleReplay):
    """A :class:`SimulatedReading` replayed as a gaze source (paced or as fast as possible)."""

    kind = "simulated"

    def __init__(self, reading: SimulatedReading, speed: Optional[float] = None, **kwargs: object) -> None:
        super().__init__(reading.samples, speed=speed, **kwargs)  # type: ignore[arg-type]
        self.reading = reading
