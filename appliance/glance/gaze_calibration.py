"""Implicit calibration: the eye tracker's constant offset, found from where the dwells land.

Why: much of a head-worn tracker's error is a per-wearer offset that stays put for a whole
reading (Pupil Labs' Neon is about 1.8° off on average without its offset correction and
1.3° with it), while :mod:`appliance.glance.gaze_scoring` treats every fixation's error as
fresh, spread over the configured ``tracker_error_deg`` (1.5°, ~200 image px on a fitted
display: dozens of candidates). A clinician dwells on lesions, and lesions are the
candidates with high detector odds, so the offset that moves the dwells onto likely
lesions is the tracker's offset. Knowing it shrinks the search disc to the error that
remains.

The fit is maximum likelihood on a grid. Each fixation counts with its dwell weight; it was
aimed, with probability ``hit_prob``, at a candidate drawn in proportion to its detector
odds and landed at that candidate plus the offset plus an isotropic normal error, or else
anywhere in the field of view. The offset spans ``max_offset_deg`` a side (coarse grid,
then a fine one around the best) and the residual error takes each of ``errors_deg``
below the configured tracker error. The fit is used only when its log-likelihood beats the
uncalibrated model (no offset, the configured error) by ``min_gain`` or more; otherwise the
reading is scored as before. With a handful of dwells a photograph rarely passes.

Measured on IDRiD_01-12 with the simulated reader, prototyped on the same lesions and
fixations (``docs/performance.md``): with its default per-fixation 1.5° error no
photograph was calibrated; with a constant 1.3° offset and 0.5° error, or with 0.25°
error, dwelt-MA sensitivity at 1 false positive per image rose by 0.02 and 0.04.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from appliance.gaze.fixations import Fixation

logger = logging.getLogger(__name__)

#: Mean error magnitude of a 2-D isotropic normal = per-axis sigma * sqrt(pi / 2).
_MEAN_TO_SIGMA = 1.0 / math.sqrt(math.pi / 2)


@dataclass(frozen=True)
class CalibrationParams:
    """Search space and acceptance of the offset fit (see the module docstring)."""

    max_offset_deg: float = 2.5
    coarse_step_deg: float = 0.25
    fine_step_deg: float = 0.05
    errors_deg: tuple[float, ...] = (0.35, 0.6, 1.0)
    hit_prob: float = 0.8
    min_gain: float = 6.0
    min_weight: float = 0.05

    def __post_init__(self) -> None:
        if not (self.max_offset_deg > 0 and self.coarse_step_deg > 0 and self.fine_step_deg > 0):
            raise ValueError("The offset range and its steps must be positive.")
        if not self.errors_deg or min(self.errors_deg) <= 0:
            raise ValueError("Residual errors must be positive.")
        if not 0 < self.hit_prob < 1:
            raise ValueError("hit_prob must lie in (0, 1).")


@dataclass(frozen=True)
class GazeCalibration:
    """A fitted tracker offset.

    ``offset_deg`` is where the tracker puts the gaze relative to what was looked at (x
    right, y down, degrees); ``error_deg`` the mean error left once it is taken out;
    ``gain`` the log-likelihood gained over the uncalibrated model; ``fixations`` how many
    fixations weighed in.
    """

    offset_deg: tuple[float, float]
    error_deg: float
    gain: float
    fixations: int

    def shift(self, fixation: Fixation) -> tuple[float, float]:
        """Return the fixation's position with the offset taken out, image px."""
        return (fixation.x - self.offset_deg[0] * fixation.px_per_deg,
                fixation.y - self.offset_deg[1] * fixation.px_per_deg)


def _log_likelihood(D: np.ndarray, ppd: np.ndarray, w: np.ndarray, prior: np.ndarray,
                    offsets_deg: np.ndarray, error_deg: float, hit_prob: float,
                    area_px: float) -> np.ndarray:
    """Weighted log-likelihood of the fixations for each offset (one value per row of ``offsets_deg``).

    ``D[i]`` holds candidate minus fixation ``i`` (image px) for the candidates in reach.
    """
    ll = np.zeros(len(offsets_deg))
    for Di, p, wi, pr in zip(D, ppd, w, prior):
        s = error_deg * _MEAN_TO_SIGMA * p
        o = offsets_deg * p
        d2 = (Di[None, :, 0] - o[:, None, 0]) ** 2 + (Di[None, :, 1] - o[:, None, 1]) ** 2
        dens = (pr[None, :] * np.exp(-d2 / (2 * s * s))).sum(axis=1) / (2 * math.pi * s * s)
        ll += wi * np.log((1 - hit_prob) / area_px + hit_prob * dens)
    return ll


def _grid(center: np.ndarray, half: float, step: float) -> np.ndarray:
    """Offsets on a square grid around ``center`` (degrees)."""
    g = np.arange(-half, half + step / 2, step)
    return np.stack(np.meshgrid(g, g), -1).reshape(-1, 2) + center


def calibrate(xy: np.ndarray, scores: np.ndarray, fixations: Sequence[Fixation], weights: np.ndarray,
              fov_area_px: float, tracker_error_deg: float,
              params: CalibrationParams = CalibrationParams()) -> Optional[GazeCalibration]:
    """Fit the tracker's offset from the dwells; None when the fit does not convince.

    Parameters
    ----------
    xy, scores
        Candidate centres (image px) and detector scores in 0..1.
    fixations, weights
        The reading's fixations and their dwell weights
        (:func:`appliance.glance.gaze_scoring.dwell_weights`).
    fov_area_px
        Area of the field of view in px (where an unaimed fixation may land).
    tracker_error_deg
        The configured mean error: the uncalibrated model, and an upper bound on the fit.
    """
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    keep = [i for i, f in enumerate(fixations)
            if weights[i] >= params.min_weight and math.isfinite(f.px_per_deg) and f.px_per_deg > 0]
    errors = [e for e in params.errors_deg if e < tracker_error_deg]
    if xy.shape[0] == 0 or not keep or not errors or fov_area_px <= 0:
        return None
    p = np.clip(np.asarray(scores, np.float64), 1e-4, 1 - 1e-4)
    odds = p / (1 - p)
    odds = odds / odds.sum()
    reach_deg = params.max_offset_deg + 4 * tracker_error_deg * _MEAN_TO_SIGMA
    # Per fixation: candidate minus fixation (px) and the candidates' prior, within reach.
    D, prior = [], []
    for i in keep:
        f = fixations[i]
        d = xy - (f.x, f.y)
        near = np.hypot(d[:, 0], d[:, 1]) <= reach_deg * f.px_per_deg
        D.append(d[near])
        prior.append(odds[near])
    args = (np.array([fixations[i].px_per_deg for i in keep]), np.array([float(weights[i]) for i in keep]), prior)
    null = float(_log_likelihood(D, *args, np.zeros((1, 2)), tracker_error_deg, params.hit_prob, fov_area_px)[0])
    best: Optional[tuple[float, np.ndarray, float]] = None
    for err in errors:
        coarse = _grid(np.zeros(2), params.max_offset_deg, params.coarse_step_deg)
        ll = _log_likelihood(D, *args, coarse, err, params.hit_prob, fov_area_px)
        fine = _grid(coarse[int(ll.argmax())], params.coarse_step_deg, params.fine_step_deg)
        fine = fine[np.abs(fine).max(axis=1) <= params.max_offset_deg + 1e-9]
        ll = _log_likelihood(D, *args, fine, err, params.hit_prob, fov_area_px)
        k = int(ll.argmax())
        if best is None or ll[k] > best[0]:
            best = (float(ll[k]), fine[k], err)
    assert best is not None
    gain = best[0] - null
    if gain < params.min_gain:
        logger.debug("gaze calibration not used: gain %.1f < %.1f", gain, params.min_gain)
        return None
    # The grid searched candidate minus fixation; the tracker's offset is the opposite.
    cal = GazeCalibration((round(float(-best[1][0]), 3), round(float(-best[1][1]), 3)), best[2],
                          round(gain, 2), len(keep))
    logger.info("gaze calibration: offset %.2f°, %.2f° (residual error %.2f°, log-likelihood +%.1f, %d fixations)",
                *cal.offset_deg, cal.error_deg, cal.gain, cal.fixations)
    return cal
